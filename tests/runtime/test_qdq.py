"""`runtime.qdq`: the load-time rewrites of int8 graphs for ONNX Runtime and OpenVINO, on SED-tiny's int8 graphs.

Tolerances: the uint8 rewrite is exact in the Q/DQ arithmetic, so with ONNX Runtime's optimisations
off (each Q and DQ computed as written) the outputs must be bit-identical. With them on, ONNX Runtime
fuses Q/DQ into integer kernels (QLinearConv, ...) that requantize with their own fixed-point
rounding: a value on a rounding boundary moves by one step of 1/127 of its range, and such steps
propagate through a few layers; 3 steps (3/127 of the output's largest value) bound it. OpenVINO
is compared with the exact arithmetic of the graph it is given (output Q/DQ stripped) at the same bound.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from sed_deploy.export.int8 import INT8_STAGES
from sed_deploy.runtime.qdq import COMPUTE_OPS, activations_to_uint8, for_openvino, strip_output_qdq
from sed_deploy.runtime.stage_feeds import check_sizes, random_feeds

ort = pytest.importorskip("onnxruntime")
FUSED_TOLERANCE = 3 / 127


def _session(model: onnx.ModelProto | bytes, exact: bool, optimized: str | None = None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if optimized:
        options.optimized_model_filepath = optimized
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _case(tiny_int8, stage):
    out, manifest, _, _ = tiny_int8
    spec = manifest.stages[stage]
    path = out / spec.variants["int8"].file
    feeds = random_feeds(spec, check_sizes(spec, (17,))[0], np.random.default_rng(0))
    names = [t.name for t in spec.outputs if t.dtype == "float32"]
    return path, onnx.load(str(path)), feeds, names


def _rel(ref: np.ndarray, got: np.ndarray) -> float:
    return float(np.abs(ref - got).max() / np.abs(ref).max())


@pytest.mark.parametrize("stage", INT8_STAGES)
def test_uint8_activations_are_exact_and_leave_weights_int8(tiny_int8, stage):
    _, model, feeds, names = _case(tiny_int8, stage)
    rewritten = activations_to_uint8(model)
    onnx.checker.check_model(rewritten)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    q_outputs = set()
    for node in rewritten.graph.node:
        if node.op_type == "QuantizeLinear":
            assert inits[node.input[2]].dtype == np.uint8 and (inits[node.input[2]] == 128).all()
            q_outputs.add(node.output[0])
        elif node.op_type == "DequantizeLinear" and node.input[0] in inits:  # a weight
            assert inits[node.input[0]].dtype == np.int8 and inits[node.input[2]].dtype == np.int8
        elif node.op_type == "DequantizeLinear":
            assert node.input[0] in q_outputs and inits[node.input[2]].dtype == np.uint8
    for a, b in zip(_session(model, True).run(names, feeds), _session(rewritten, True).run(names, feeds),
                    strict=True):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("stage", INT8_STAGES)
def test_onnxruntime_fuses_the_uint8_form_within_tolerance(tiny_int8, stage, tmp_path):
    _, model, feeds, names = _case(tiny_int8, stage)
    exact = _session(model, True).run(names, feeds)
    fused = _session(activations_to_uint8(model), False, str(tmp_path / "u8.onnx")).run(names, feeds)
    for a, b in zip(exact, fused, strict=True):
        assert _rel(a, b) <= FUSED_TOLERANCE
    _session(model, False, str(tmp_path / "s8.onnx"))
    count = {k: sum(n.op_type == "QLinearConv" for n in onnx.load(str(tmp_path / f"{k}.onnx")).graph.node)
             for k in ("u8", "s8")}
    assert count["u8"] > count["s8"], count  # why the runtime rewrites: more convolutions run in int8


@pytest.mark.parametrize("stage", INT8_STAGES)
def test_strip_output_qdq_keeps_only_pairs_that_feed_compute(tiny_int8, stage):
    _, model, feeds, names = _case(tiny_int8, stage)
    stripped = strip_output_qdq(model)
    onnx.checker.check_model(stripped)
    consumers: dict[str, list[str]] = {}
    for node in stripped.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.op_type)
    made_by_q = {n.output[0] for n in stripped.graph.node if n.op_type == "QuantizeLinear"}
    pairs = [n for n in stripped.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in made_by_q]
    assert pairs and all(set(consumers.get(n.output[0], [])) & COMPUTE_OPS for n in pairs)
    if stage != "cost":  # cost's only output Q/DQ pairs feed its convolutions: nothing to strip there
        assert len(stripped.graph.node) < len(model.graph.node)
    assert [o.name for o in stripped.graph.output] == [o.name for o in model.graph.output]
    _session(stripped, True).run(names, feeds)


@pytest.mark.parametrize("stage", INT8_STAGES)
def test_openvino_runs_the_rewritten_graph_as_its_qdq_arithmetic(tiny_int8, stage):
    ov = pytest.importorskip("openvino")
    path, model, feeds, names = _case(tiny_int8, stage)
    exact = _session(strip_output_qdq(model), True).run(names, feeds)
    core = ov.Core()
    compiled = core.compile_model(core.read_model(model=for_openvino(path), weights=b""), "CPU")
    result = compiled(feeds)
    for name, ref in zip(names, exact, strict=True):
        assert _rel(ref, result[compiled.output(name)]) <= FUSED_TOLERANCE
