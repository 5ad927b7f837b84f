"""float16 stage graphs, made and checked at export (`sed-export --precision fp16`).

TensorRT builds fp16 engines strongly typed, from a graph that carries its own precision (11.x has
no precision flags at all), and ONNX Runtime's CUDA provider runs the same file. Making the graphs on
the export workstation leaves the edge device with TensorRT alone (no onnx, no ONNX Runtime). The
conversion turns every float32 tensor of the graph into float16 except where float16 loses too much:

- LayerNormalization, InstanceNormalization (SED's GroupNorm), Softmax and TopK run in float32;
- custom-domain nodes (the `sed::linear_class_attention` plugin node) keep float32 inputs and outputs:
  their ONNX Runtime op is float32 only, and the plugin computes in float32 internally;
- every chain from a sum or mean reduction to the division it feeds stays in float32: the cosine
  normalisation (sum of squares, sqrt, clamp, divide, squares included) and the normaliser of the
  linear class attention (a sum over up to hundreds of classes), which overflow float16 otherwise.

Graph inputs and outputs keep their types (Casts at the boundary), so the runtime feeds the same
arrays to fp32 and fp16 engines. `check_fp16` runs both graphs in ONNX Runtime on the CPU on the
same inputs and reports the relative error of every float output.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sed_deploy.core.fileio import atomic_write
from sed_deploy.core.manifest import GraphVariant, StageSpec, file_sha256
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.onnxruntime import session_options
from sed_deploy.runtime.stage_feeds import check_sizes, random_feeds

FLOAT32_OPS = frozenset({"LayerNormalization", "InstanceNormalization", "Softmax", "TopK"})
REDUCTIONS = frozenset({"ReduceSum", "ReduceMean", "ReduceL2"})
FP16_TOLERANCE = 2e-2  # relative error (max |fp16 - fp32| / max |fp32|) of a stage's float outputs


def float32_nodes(graph: onnx.GraphProto) -> set[int]:
    """Indices of the nodes that stay in float32 (see the module docstring)."""
    consumers = defaultdict(list)
    producer = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers[name].append(i)
        for name in node.output:
            producer[name] = i
    keep = {i for i, n in enumerate(graph.node) if n.op_type in FLOAT32_OPS or n.domain not in ("", "ai.onnx")}
    for i, node in enumerate(graph.node):
        if node.op_type not in REDUCTIONS:
            continue
        keep.add(i)
        source = producer.get(node.input[0])  # x * x feeding the sum: the square itself overflows
        if source is not None and graph.node[source].op_type in ("Mul", "Pow") and (
            graph.node[source].op_type == "Pow" or graph.node[source].input[0] == graph.node[source].input[1]
        ):
            keep.add(source)
        frontier = [c for out in node.output for c in consumers[out]]
        while frontier:  # forward to the division that brings values back to a small range
            j = frontier.pop()
            if j in keep:
                continue
            keep.add(j)
            if graph.node[j].op_type != "Div":
                frontier.extend(c for out in graph.node[j].output for c in consumers[out])
    return keep


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of `model` computing in float16 except the nodes of `float32_nodes`.

    Every float tensor has a home precision (graph inputs float32; node outputs that of their node;
    initializers float16 unless a float32 node uses them); a node that needs a tensor in the other
    precision reads it through one shared Cast. Float outputs computed in float16 are cast back.
    """
    model = onnx.shape_inference.infer_shapes(model)
    graph = model.graph
    keep32 = float32_nodes(graph) | _constants_only_for(graph, float32_nodes(graph))
    floats = {v.name for v in (*graph.value_info, *graph.input, *graph.output)
              if v.type.tensor_type.elem_type == TensorProto.FLOAT}
    floats |= {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    used32 = {name for i, n in enumerate(graph.node) if i in keep32 for name in n.input}
    home = {v.name: 32 for v in graph.input if v.name in floats}
    home |= {i.name: (32 if i.name in used32 else 16) for i in graph.initializer if i.name in floats}
    for i, node in enumerate(graph.node):
        home |= {out: (32 if i in keep32 else 16) for out in node.output if out in floats}
    renamed = {v.name: f"{v.name}__fp16" for v in graph.output if home.get(v.name) == 16}
    nodes: list[onnx.NodeProto] = []
    casts: dict[tuple[str, int], str] = {}

    def read(name: str, precision: int) -> str:
        if name not in home or home[name] == precision:
            return renamed.get(name, name)
        if (name, precision) not in casts:
            out = f"{name}__as{precision}"
            to = TensorProto.FLOAT if precision == 32 else TensorProto.FLOAT16
            nodes.append(helper.make_node("Cast", [renamed.get(name, name)], [out], to=to, name=f"cast_{out}"))
            casts[(name, precision)] = out
        return casts[(name, precision)]

    for i, original in enumerate(graph.node):
        node = onnx.NodeProto()
        node.CopyFrom(original)
        precision = 32 if i in keep32 else 16
        node.input[:] = [read(name, precision) if name else name for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
        if precision == 16:
            _attributes_to_fp16(node)
        nodes.append(node)
    for name, internal in renamed.items():
        nodes.append(helper.make_node("Cast", [internal], [name], to=TensorProto.FLOAT, name=f"cast_out_{name}"))
    initializers = [_to_fp16(init) if home.get(init.name) == 16 else init for init in graph.initializer]
    new_graph = helper.make_graph(nodes, graph.name, list(graph.input), list(graph.output), initializers)
    converted = helper.make_model(new_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return onnx.shape_inference.infer_shapes(converted, strict_mode=True)


def _constants_only_for(graph: onnx.GraphProto, keep32: set[int]) -> set[int]:
    """Constant-making nodes whose outputs only float32 nodes read (so e.g. eps stays exact)."""
    readers = defaultdict(set)
    for i, node in enumerate(graph.node):
        for name in node.input:
            readers[name].add(i)
    return {
        i for i, node in enumerate(graph.node)
        if node.op_type in ("Constant", "ConstantOfShape")
        and all(readers[out] and readers[out] <= keep32 for out in node.output)
    }


def _to_fp16(tensor: onnx.TensorProto) -> onnx.TensorProto:
    """A float32 constant in float16, clipped to the finite float16 range (the top-k padding -1e30
    becomes -65504, still below every real score)."""
    values = np.clip(numpy_helper.to_array(tensor), -65504.0, 65504.0).astype(np.float16)
    return numpy_helper.from_array(values, tensor.name)


def _attributes_to_fp16(node: onnx.NodeProto) -> None:
    """Constants and casts inside the float16 region produce float16."""
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.FLOAT:
            attr.t.CopyFrom(_to_fp16(attr.t))
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16


def write_fp16_variant(spec: StageSpec, folder: Path, class_counts: Sequence[int]) -> GraphVariant:
    """Write `<stage>.fp16.onnx` beside the fp32 graph and check it against the fp32 graph.

    Returns the variant to record in the manifest: the fp16 graph, or (when its error exceeds
    `FP16_TOLERANCE`) the fp32 graph with the reason in `fallback`, and the file removed.
    """
    source = folder / spec.file
    target = folder / f"{spec.name}.fp16.onnx"
    converted = convert_to_fp16(onnx.load(str(source)))
    with atomic_write(target) as f:
        f.write(converted.SerializeToString())
    del converted
    feeds = [random_feeds(spec, sizes, np.random.default_rng(i))
             for i, sizes in enumerate(check_sizes(spec, tuple(class_counts)))]
    check = {**check_fp16(spec, source, target, feeds), "tolerance": FP16_TOLERANCE}
    if check["max_rel"] > FP16_TOLERANCE:
        target.unlink()
        reason = f"fp16 graph off by {check['max_rel']:.1e} relative error (tolerance {FP16_TOLERANCE:.0e})"
        return GraphVariant("fp16", spec.file, spec.sha256, check, fallback=reason)
    return GraphVariant("fp16", target.name, file_sha256(target), check)


def check_fp16(spec: StageSpec, fp32_path: Path, fp16_path: Path, feeds_list: Sequence[dict]) -> dict:
    """Run both graphs in ONNX Runtime (CPU) on the same feeds; the relative error of each float output.

    Returns:
        {"max_rel": worst, "outputs": {name: worst relative error}, "cases": len(feeds_list)}.
    """
    ort = require("onnxruntime", "checking fp16 graphs")
    options = session_options(spec, float16=True)
    s32 = ort.InferenceSession(str(fp32_path), options, providers=["CPUExecutionProvider"])
    s16 = ort.InferenceSession(str(fp16_path), options, providers=["CPUExecutionProvider"])
    names = [t.name for t in spec.outputs if t.dtype == "float32"]
    worst = dict.fromkeys(names, 0.0)
    for feeds in feeds_list:
        for name, a, b in zip(names, s32.run(names, feeds), s16.run(names, feeds), strict=True):
            scale = max(float(np.abs(a).max(initial=0.0)), 1e-12)
            worst[name] = max(worst[name], float(np.abs(a.astype(np.float64) - b).max(initial=0.0)) / scale)
    return {"max_rel": max(worst.values(), default=0.0), "outputs": worst, "cases": len(feeds_list)}
