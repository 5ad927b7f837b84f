"""The activation profile recorded at export: live intermediate bytes as linear forms of the class axes."""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sed_deploy.export.memory_profile import activation_profile


def test_peak_of_live_intermediates_in_graph_order(tmp_path):
    """x[T,4] -> Relu -> a[T,4] -> MatMul W[4,8] -> b[T,8] -> Relu -> y[T,8]: a (16 T bytes) and b
    (32 T bytes) are live together after the MatMul, so the peak is 48 T; graph I/O is not counted."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"]), helper.make_node("MatMul", ["a", "w"], ["b"]),
         helper.make_node("Relu", ["b"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", 8])],
        [numpy_helper.from_array(np.ones((4, 8), np.float32), "w")],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    profile = activation_profile(path)
    assert profile == {"axes": ["T"], "fixed": {}, "steps": [[0, 48]], "skipped": 0}


def test_exported_stages_carry_a_profile(tiny_artifacts):
    _, manifest = tiny_artifacts
    decoder3 = manifest.stages["decoder3"].memory["activations"]
    assert decoder3["axes"] == ["T2", "T3"] and decoder3["steps"]
    assert manifest.stages["text_encoder"].memory["activations"]["fixed"] == {"L": 77}
    peak_at = lambda n: max(int(np.dot(s, [1] + [n] * len(decoder3["axes"]))) for s in decoder3["steps"])  # noqa: E731
    assert peak_at(100) > 10 * peak_at(5) > 0  # grows with the classes
