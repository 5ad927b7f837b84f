"""Load-time rewrites of int8 Q/DQ stage graphs for CPU runtimes (numpy and onnx only, no torch).

`sed-export --precision int8` writes one Q/DQ graph per stage in the form TensorRT needs: int8
activations and weights, every zero point 0. Two CPU runtimes compute that form slowly or wrongly on
x86 (measured in the int8 research report, ONNX Runtime 1.32 and OpenVINO 2026.4 on AVX2):

- ONNX Runtime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv only for uint8
  activations; with int8 ones most convolutions stay float between Q/DQ pairs (slower than fp32).
- OpenVINO computes Concat -> Q/DQ -> Conv wrongly with int8 activations (14-28 % off), and a
  convolution whose output is re-quantized before a transpose and a normalisation (decoder1) too.

Both rewrites here are exact in the arithmetic of the Q/DQ operators:

- `activations_to_uint8`: every activation Q/DQ pair int8 with zero point z becomes uint8 with zero
  point z + 128 and the same scale. QuantizeLinear's uint8 result is its int8 result plus 128 for
  every input (both saturate at the same real values), and DequantizeLinear subtracts the zero
  point, so the dequantized values are identical. Weights (int8 initializers read only by a
  DequantizeLinear) stay int8.
- `strip_output_qdq`: a Q -> DQ pair whose dequantized tensor feeds no Conv, MatMul or Gemm (the
  quantizer's "output quantization" after each of them) is removed; its consumers read the float
  tensor. This changes the values by the rounding of that pair (what the int8 graph adds there), so
  it is applied for OpenVINO only, whose int8 kernels do not need the pair.

`for_onnxruntime` and `for_openvino` return the serialized graph each runtime should load.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from sed_deploy.core.optional import require

COMPUTE_OPS = frozenset({"Conv", "MatMul", "Gemm"})
Q_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def is_quantized(model) -> bool:
    """True if the graph has QuantizeLinear or DequantizeLinear nodes."""
    return any(n.op_type in Q_OPS for n in model.graph.node)


def activations_to_uint8(model):
    """A copy of `model` whose activation Q/DQ pairs are uint8 with zero point + 128 (exact; see above).

    An activation is a tensor made by a QuantizeLinear node; it and every DequantizeLinear that reads
    it get new uint8 zero points. Zero points that are absent (uint8 0 by the ONNX default) or
    already uint8 are left alone.
    """
    onnx = require("onnx", "rewriting int8 graphs")
    from onnx import TensorProto, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {i.name: i for i in graph.initializer}
    converted: dict[str, str] = {}  # int8 zero-point initializer -> its uint8 twin

    def uint8_zero_point(name: str) -> str | None:
        init = inits.get(name)
        if init is None or init.data_type != TensorProto.INT8:
            return None
        if name not in converted:
            values = numpy_helper.to_array(init).astype(np.int16) + 128
            twin = numpy_helper.from_array(values.astype(np.uint8), f"{name}__u8")
            graph.initializer.append(twin)
            converted[name] = twin.name
        return converted[name]

    rewritten: set[str] = set()  # activation tensors now uint8
    for node in graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2:
            twin = uint8_zero_point(node.input[2])
            if twin is not None:
                node.input[2] = twin
                rewritten.add(node.output[0])
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in rewritten and len(node.input) > 2:
            twin = uint8_zero_point(node.input[2])
            if twin is None:  # a DQ of a uint8 tensor with no int8 zero point to shift: cannot happen
                raise ValueError(f"DequantizeLinear {node.name!r} reads {node.input[0]!r} without an int8 zero point")
            node.input[2] = twin
    for info in graph.value_info:
        if info.name in rewritten:
            info.type.tensor_type.elem_type = TensorProto.UINT8
    _drop_unused_initializers(graph)
    return out


def strip_output_qdq(model):
    """A copy of `model` without the Q -> DQ pairs whose DQ output feeds no Conv, MatMul or Gemm."""
    onnx = require("onnx", "rewriting int8 graphs")
    from onnx import helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)
    made_by_q = {n.output[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    outputs = {o.name for o in graph.output}
    replace: dict[str, str] = {}
    drop: set[int] = set()
    identities = []
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in made_by_q:
            continue
        if any(c.op_type in COMPUTE_OPS for c in consumers[node.output[0]]):
            continue
        source = made_by_q[node.input[0]].input[0]
        drop.add(id(node))
        if node.output[0] in outputs:  # keep the graph output's name
            identities.append(helper.make_node("Identity", [source], [node.output[0]], name=f"{node.name}__float"))
        else:
            replace[node.output[0]] = source
    kept = [n for n in graph.node if id(n) not in drop]
    for node in kept:
        node.input[:] = [replace.get(name, name) for name in node.input]
    read = {name for n in kept for name in n.input} | outputs
    kept = [n for n in kept if n.op_type != "QuantizeLinear" or n.output[0] in read]
    del graph.node[:]
    graph.node.extend(kept + identities)
    names = {name for n in graph.node for name in n.output}
    keep_info = [v for v in graph.value_info if v.name in names]
    del graph.value_info[:]
    graph.value_info.extend(keep_info)
    _drop_unused_initializers(graph)
    return _topologically_sorted(out)


def for_onnxruntime(path: str | Path) -> bytes:
    """The int8 graph at `path`, serialized as ONNX Runtime should load it (uint8 activations)."""
    return activations_to_uint8(_load(path)).SerializeToString()


def for_openvino(path: str | Path) -> bytes:
    """The int8 graph at `path`, serialized as OpenVINO should load it (output Q/DQ stripped, uint8
    activations); `openvino.Core().read_model(model=bytes_, weights=b"")` or `compile_model` reads it."""
    return activations_to_uint8(strip_output_qdq(_load(path))).SerializeToString()


def _load(path: str | Path):
    onnx = require("onnx", "rewriting int8 graphs")
    return onnx.load(str(path))


def _drop_unused_initializers(graph) -> None:
    used = {name for n in graph.node for name in n.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _topologically_sorted(model):
    """Nodes in an order where every input is made before it is read (the Identity nodes added last
    may be read by nothing, but keep the order valid anyway)."""
    graph = model.graph
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        rest = []
        for node in pending:
            if all(name in ready for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a dangling input near node {rest[0].name!r}")
        pending = rest
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model
