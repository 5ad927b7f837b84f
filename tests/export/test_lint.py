"""The TensorRT lint rejects what TensorRT would reject."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sed_deploy.export.lint import GraphLintError, check_graph, lint_graph


def _model(nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def _x(shape=("T", 4)):
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))


def test_a_clean_graph_passes():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_x()], [helper.make_tensor_value_info("y", 1, ["T", 4])])
    assert lint_graph(model, {"x": {0: "T"}, "y": {0: "T"}}) == []


def test_forbidden_op_fails_with_its_name():
    model = _model([helper.make_node("NonZero", ["x"], ["y"])], [_x()],
                   [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "N"])])
    with pytest.raises(GraphLintError, match="NonZero node 'y' is forbidden \\(data-dependent output shape\\)"):
        check_graph(model, {"x": {0: "T"}, "y": {1: "N"}}, "toy")


def test_op_outside_allow_list_fails():
    y = helper.make_tensor_value_info("y", 1, ["T", 4])
    model = _model([helper.make_node("Hardmax", ["x"], ["y"])], [_x()], [y])
    assert any("not in the TensorRT allow-list" in p for p in lint_graph(model, {"x": {0: "T"}, "y": {0: "T"}}))


def test_undeclared_dynamic_dimension_fails():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_x(("T", "C"))],
                   [helper.make_tensor_value_info("y", 1, ["T", "C"])])
    with pytest.raises(GraphLintError, match="'x' axis 1 is dynamic \\('C'\\) but not declared"):
        check_graph(model, {"x": {0: "T"}, "y": {0: "T"}}, "toy")


def test_declared_dynamic_axis_that_became_static_fails():
    y = helper.make_tensor_value_info("y", 1, [7, 4])
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_x((7, 4))], [y])
    assert "'x' axis 0 should be dynamic 'T', got 7" in lint_graph(model, {"x": {0: "T"}, "y": {0: "T"}})[0]


def test_baked_reshape_and_non_constant_topk_fail():
    shape = numpy_helper.from_array(np.array([7, 2, 2], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["k"], axis=0),
        helper.make_node("TopK", ["x", "k1"], ["v", "i"], axis=0),
    ]
    zero = numpy_helper.from_array(np.array(0, dtype=np.int64), "zero")
    k1 = helper.make_tensor_value_info("k1", TensorProto.INT64, [1])
    model = _model(nodes, [_x(), k1], [helper.make_tensor_value_info("r", 1, [7, 2, 2])], [shape, zero])
    problems = " ".join(lint_graph(model, {"x": {0: "T"}}))
    assert "reshapes a dynamic tensor to the constant shape [7, 2, 2]" in problems
    assert "has a K that is not a constant" in problems


def test_cubic_resize_fails():
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="cubic")
    x = helper.make_tensor_value_info("x", 1, [1, 1, 4, 4])
    model = _model([node], [x], [helper.make_tensor_value_info("y", 1, [1, 1, 8, 8])], [scales])
    assert "mode=cubic" in lint_graph(model, {})[0]


def test_unknown_custom_domain_node_fails_but_the_plugin_passes():
    y = helper.make_tensor_value_info("y", 1, ["T", 4])
    graph = helper.make_graph([helper.make_node("Mystery", ["x"], ["y"], domain="acme")], "g", [_x()], [y])
    unknown = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("acme", 1)])
    assert "in domain 'acme' is not a known TensorRT plugin" in lint_graph(unknown, {"x": {0: "T"}, "y": {0: "T"}})[0]
    plugin = helper.make_node("linear_class_attention", ["x", "x", "x"], ["y"], domain="sed")
    graph = helper.make_graph([plugin], "g", [_x()], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("sed", 1)])
    assert lint_graph(model, {"x": {0: "T"}, "y": {0: "T"}}) == []
