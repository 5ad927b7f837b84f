"""int8 stage graphs, calibrated and checked at export (`sed-export --precision int8`).

Each quantized stage becomes one Q/DQ graph (`<stage>.int8.onnx`) that TensorRT, ONNX Runtime and
OpenVINO all read: ONNX Runtime's static quantizer in QDQ format, int8 activations and weights with
every zero point 0 (TensorRT's explicit quantization accepts nothing else), per-channel weights,
float biases, MinMax ranges from the stage's inputs recorded on the user's images
(`calibration.record_feeds`). The recipe and the choices below were measured in the int8 research
report (SED-B and tiny, ONNX Runtime 1.32, OpenVINO 2026.4, AVX2):

- only Conv, MatMul and Gemm are quantized; normalisations, GELU, divisions, reductions, TopK,
  gathers and concatenations stay float (there is no Softmax in these stages);
- also left float: the convolutions whose output reaches a TopK or the final logits through
  data-moving ops only (the top-k heads and the logits head: they decide which classes survive),
  the MatMuls of two activations (the cost cosine and the class attention's sums over T classes,
  whose range depends on T and which OpenVINO saturates), and the image encoder's stem convolution
  (it quantizes the image itself and was the dominant error source: dense error 0.11 -> 0.04);
- 7-bit weights (`reduce_range`): full 8-bit weights saturate in the u8 x s8 kernels of AVX2 CPUs
  (error 1e-2..5e-2 per op in both ONNX Runtime and OpenVINO); the cost in exact arithmetic is small.

`INT8_STAGES` are the stages where int8 pays on a CPU (image encoder 1.4-1.5x, cost 1.7x, decoder1
1.3-1.5x); decoder2 and decoder3 run 3-D pointwise MatMuls over 96^2 / 192^2 pixels with 16-64
channels that ONNX Runtime's int8 kernels run no faster (1.01x) or slower (0.84x), so they keep
their fp32 graph (recorded as such in the manifest). Each quantized graph is run against its fp32
graph on the calibration inputs, as ONNX Runtime runs it (`runtime.qdq.for_onnxruntime`); a stage
over `INT8_TOLERANCE` keeps its fp32 graph, with the reason in the manifest.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from sed_deploy.core.contract import COST, DECODERS, IMAGE_ENCODER, LOGITS
from sed_deploy.core.manifest import GraphVariant, StageSpec, file_sha256
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.onnxruntime import session_options
from sed_deploy.runtime.qdq import for_onnxruntime

from .lint import check_graph

INT8_STAGES = (IMAGE_ENCODER, COST, DECODERS[0])
QUANTIZED_OPS = ("Conv", "MatMul", "Gemm")
# Worst relative error (max |int8 - fp32| / max |fp32|) of a stage's float outputs, and the lowest cosine
# similarity, on the calibration inputs. The recipe measured 0.016-0.081 (cosine >= 0.9991) on SED-B and
# tiny with random weights; the AVX2 saturation and OpenVINO defects it avoids gave 0.05-1.25 (cosine down
# to 0.49). 0.15 / 0.99 admit the former with room for real weights and more images, and refuse the latter.
INT8_TOLERANCE = 0.15
INT8_MIN_COSINE = 0.99
# Ops a head's output passes through on its way to a TopK or the logits without being computed on.
_DATA_MOVES = frozenset({"Gather", "Concat", "Reshape", "Transpose", "Cast", "Squeeze", "Unsqueeze",
                         "Identity", "Flatten", "Slice"})
FINAL_OUTPUTS = (LOGITS,)

Feeds = dict[str, np.ndarray]


def float_nodes(model: onnx.ModelProto, stage: str) -> list[str]:
    """Names of the Conv/MatMul/Gemm nodes to leave in float (see the module docstring)."""
    graph = model.graph
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    constant = {i.name for i in graph.initializer}
    for node in graph.node:  # constants and what is computed from constants only
        if node.op_type == "Constant" or (node.input and all(n in constant for n in node.input if n)):
            constant.update(node.output)
    finals = set(FINAL_OUTPUTS) & {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type not in QUANTIZED_OPS:
            continue
        if (_reaches(node.output[0], consumers, finals)
                or (node.op_type == "MatMul" and not any(n in constant for n in node.input))
                or (stage == IMAGE_ENCODER and _reads_graph_input(node, graph))):
            keep.append(node.name)
    return keep


def _reaches(tensor: str, consumers, finals: set[str]) -> bool:
    """True if `tensor` flows into a TopK or a final output through data-moving ops only."""
    frontier, seen = [tensor], set()
    while frontier:
        name = frontier.pop()
        if name in finals:
            return True
        if name in seen:
            continue
        seen.add(name)
        for node in consumers[name]:
            if node.op_type == "TopK":
                return True
            if node.op_type in _DATA_MOVES:
                frontier.extend(node.output)
    return False


def _reads_graph_input(node: onnx.NodeProto, graph: onnx.GraphProto) -> bool:
    inputs = {i.name for i in graph.input}
    return any(name in inputs for name in node.input)


class FeedReader:
    """ONNX Runtime's CalibrationDataReader over recorded feeds; `set_range` and `__len__` let the
    quantizer collect one image at a time (`CalibStridedMinMax`), so memory stays bounded."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self.feeds = list(feeds)
        self.start, self.end, self.next = 0, len(self.feeds), 0

    def get_next(self) -> Feeds | None:
        if self.next >= self.end:
            return None
        self.next += 1
        return self.feeds[self.next - 1]

    def rewind(self) -> None:
        self.next = self.start

    def set_range(self, start_index: int, end_index: int) -> None:
        self.start, self.end, self.next = start_index, min(end_index, len(self.feeds)), start_index

    def __len__(self) -> int:
        return len(self.feeds)


def quantize_stage(source: Path, target: Path, stage: str, feeds: Sequence[Feeds]) -> None:
    """Write the symmetric int8 Q/DQ graph of the fp32 graph `source` to `target`."""
    require("onnxruntime", "int8 quantization")
    import onnxruntime.quantization as quantization
    excluded = float_nodes(onnx.load(str(source), load_external_data=False), stage)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises its pre-processing through the root logger; not needed here
    try:
        _quantize(quantization, source, target, feeds, excluded)
    finally:
        root.setLevel(level)


def _quantize(quantization, source: Path, target: Path, feeds: Sequence[Feeds], excluded: list[str]) -> None:
    quantization.quantize_static(
        str(source), str(target), FeedReader(feeds),
        quant_format=quantization.QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        reduce_range=True,
        activation_type=quantization.QuantType.QInt8,
        weight_type=quantization.QuantType.QInt8,
        nodes_to_exclude=excluded,
        calibrate_method=quantization.CalibrationMethod.MinMax,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                       "CalibStridedMinMax": 1},
    )


def check_int8(spec: StageSpec, fp32_path: Path, int8_path: Path, feeds: Sequence[Feeds]) -> dict:
    """Both graphs in ONNX Runtime (CPU; the int8 one as the runtime loads it) on the same feeds.

    Returns:
        {"max_rel", "min_cosine", "outputs": {name: {"max_rel", "cosine"}}, "cases": len(feeds)}.
    """
    ort = require("onnxruntime", "checking int8 graphs")
    options = session_options(spec)
    s32 = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    s8 = ort.InferenceSession(for_onnxruntime(int8_path), options, providers=["CPUExecutionProvider"])
    names = [t.name for t in spec.outputs if t.dtype == "float32"]
    worst = {name: {"max_rel": 0.0, "cosine": 1.0} for name in names}
    for f in feeds:
        for name, a, b in zip(names, s32.run(names, f), s8.run(names, f), strict=True):
            a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            rel = float(np.abs(a - b).max(initial=0.0)) / max(float(np.abs(a).max(initial=0.0)), 1e-12)
            cos = float(a @ b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-30)
            worst[name] = {"max_rel": max(worst[name]["max_rel"], rel), "cosine": min(worst[name]["cosine"], cos)}
    return {"max_rel": max((w["max_rel"] for w in worst.values()), default=0.0),
            "min_cosine": min((w["cosine"] for w in worst.values()), default=1.0),
            "outputs": worst, "cases": len(feeds)}


def write_int8_variant(spec: StageSpec, folder: Path, feeds: Sequence[Feeds], calibration: dict,
                       tolerance: float = INT8_TOLERANCE) -> GraphVariant:
    """Write `<stage>.int8.onnx` beside the fp32 graph, lint it and check it against the fp32 graph.

    Args:
        feeds: the stage's recorded inputs (`calibration.record_feeds`).
        calibration: what the manifest records about the calibration set (digest, images, vocabulary).
        tolerance: the largest relative error admitted (`INT8_TOLERANCE`).

    Returns:
        The variant to record: the int8 graph, or (over tolerance, or not in `INT8_STAGES`) the fp32
        graph with the reason in `fallback` and no int8 file left behind.
    """
    if spec.name not in INT8_STAGES:
        reason = "kept fp32: int8 does not pay for this stage on CPUs (measured 0.84-1.01x)"
        return GraphVariant("int8", spec.file, spec.sha256, {"calibration": calibration}, fallback=reason)
    source = folder / spec.file
    target = folder / f"{spec.name}.int8.onnx"
    partial = target.with_name(f".{target.name}.partial")  # the quantizer writes in place; rename when done
    try:
        quantize_stage(source, partial, spec.name, feeds)
        model = onnx.load(str(partial))
        check_graph(onnx.shape_inference.infer_shapes(model),
                    {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs)}, spec.name)
        del model
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    check = {**check_int8(spec, source, target, feeds), "tolerance": tolerance, "min_cosine_allowed": INT8_MIN_COSINE,
             "metric": "max_abs / max|fp32| and cosine, on the calibration inputs", "calibration": calibration}
    if check["max_rel"] > tolerance or check["min_cosine"] < INT8_MIN_COSINE:
        target.unlink()
        reason = (f"int8 graph off by {check['max_rel']:.1e} relative error, cosine {check['min_cosine']:.5f} "
                  f"(tolerance {tolerance:.2g}, cosine >= {INT8_MIN_COSINE})")
        return GraphVariant("int8", spec.file, spec.sha256, check, fallback=reason)
    return GraphVariant("int8", target.name, file_sha256(target), check)
