"""Multiply-adds counted on ONNX graphs: hand-made graphs with known counts, and the tiny artifacts."""

import math

import onnx
import pytest
from onnx import TensorProto, helper

from sed_deploy.benchmarks.latency.multiply_adds import gflops, graph_macs, matmul_peak, stage_work
from sed_deploy.core.errors import ArtifactError


def _save(tmp_path, nodes, inputs, outputs, initializers=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    return path


def _weight(name, dims):
    return helper.make_tensor(name, TensorProto.FLOAT, dims, [0.0] * math.prod(dims))


def test_conv_and_matmul_per_class(tmp_path):
    # x [T,4,8,8] -conv 3x3, 6 out, pad 1-> [T,6,8,8] -reshape-> [T,6,64] -matmul [64,5]-> [T,6,5]
    shape = helper.make_tensor("shape", TensorProto.INT64, [3], [0, 6, 64])
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["y", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "m"], ["out"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", 4, 8, 8])],
                 [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                 [_weight("w", [6, 4, 3, 3]), _weight("m", [64, 5]), shape])
    per_class = 6 * 8 * 8 * 4 * 9 + 6 * 5 * 64
    assert graph_macs(path, 3) == (3 * per_class, 0)
    work = stage_work(path)
    assert (work.fixed, work.per_class, work.uncounted) == (0, per_class, 0)
    assert work.macs(2.5) == 2.5 * per_class


def test_grouped_conv_transpose_and_gemm(tmp_path):
    nodes = [helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], group=2),
             helper.make_node("Gemm", ["a", "b"], ["c"], transA=1)]
    path = _save(tmp_path, nodes,
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 5, 5]),
                  helper.make_tensor_value_info("a", TensorProto.FLOAT, [7, 3])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                  helper.make_tensor_value_info("c", TensorProto.FLOAT, None)],
                 [_weight("w", [4, 3, 2, 2]), _weight("b", [7, 9])])
    # ConvTranspose: every input element meets (out channels per group = 3) x 2x2 weights
    assert graph_macs(path, 1) == (4 * 25 * 3 * 4 + 3 * 9 * 7, 0)


def test_a_stage_that_is_not_affine_is_refused(tmp_path):
    # [T,T] @ [T,T]: T^3 multiply-adds
    nodes = [helper.make_node("MatMul", ["x", "x"], ["y"])]
    path = _save(tmp_path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", "T"])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    with pytest.raises(ArtifactError, match="not affine in the class count"):
        stage_work(path)


def test_tiny_stages(tiny_artifacts):
    folder, manifest = tiny_artifacts
    works = {name: stage_work(folder / manifest.stages[name].file)
             for name in ("image_encoder", "cost", "decoder1", "decoder2", "decoder3")}
    assert works["image_encoder"].per_class == 0 and works["image_encoder"].fixed > 0
    for name in ("cost", "decoder1", "decoder2", "decoder3"):
        assert works[name].fixed == 0 and works[name].per_class > 0 and works[name].uncounted == 0
    # cost: the cosine volume alone is T x P x s^2 x D multiply-adds
    config = manifest.config
    s = config["image_size"] // 32
    assert works["cost"].per_class > config["num_templates"] * s * s * config["embed_dim"]


def test_gflops_and_matmul_peak():
    assert gflops(1e9, 0.5) == 4.0
    peak = matmul_peak(size=256, repeats=2)
    assert set(peak["rates"]) == {"numpy", "onnxruntime"}  # torch only when already imported
    assert peak["gflops"] == max(peak["rates"].values()) > 0
