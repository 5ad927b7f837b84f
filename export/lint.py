"""A TensorRT-compatibility lint for the stage graphs (facts from `reference/trt-notes.md`, section 8).

A graph fails the lint if it contains an operator outside `ALLOWED_OPS` (data-dependent shapes,
control flow, sequences and other things TensorRT rejects or handles badly are not in it), a Resize
that is cubic or antialiased, a TopK whose K is not a constant below 3840, a Reshape whose constant
target bakes in the extent of a dynamic axis, or a dynamic dimension on its inputs or outputs
other than the declared ones (or a declared one that became static). QuantizeLinear and
DequantizeLinear must be symmetric int8 (a constant int8 zero point of 0), the only explicit
quantization TensorRT builds; the QOperator form (QLinearConv, ConvInteger, ...) is outside the list.
"""

from __future__ import annotations

from collections.abc import Mapping

import onnx
from onnx import numpy_helper

from sed_deploy.core.contract import TOPK_LIMIT
from sed_deploy.core.errors import SedDeployError

# Custom-domain nodes TensorRT maps to a registered plugin: (domain, op_type).
KNOWN_PLUGINS = frozenset({("sed", "linear_class_attention")})

ALLOWED_OPS = frozenset({
    # arithmetic and activations
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf",
    "Relu", "Elu", "Sigmoid", "Tanh", "Softmax", "Max", "Min", "Clip", "Sign", "Floor", "Ceil",
    # linear algebra, convolution and normalisation
    "MatMul", "Gemm", "Conv", "ConvTranspose", "LayerNormalization", "InstanceNormalization",
    "BatchNormalization", "AveragePool", "MaxPool", "GlobalAveragePool", "Einsum",
    # reductions
    "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ArgMax", "ArgMin", "TopK",
    # shapes and indexing
    "Shape", "Size", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split",
    "Slice", "Gather", "GatherElements", "GatherND", "Expand", "Tile", "Range", "ConstantOfShape",
    "Constant", "Identity", "Cast", "Where", "Equal", "Less", "LessOrEqual", "Greater",
    "GreaterOrEqual", "Not", "And", "Or", "Pad", "Resize", "Trilu", "CumSum",
    # explicit quantization (int8 graphs of sed-export --precision int8)
    "QuantizeLinear", "DequantizeLinear",
})

# Named so the message can say why (everything else outside the allow-list is "not allowed").
FORBIDDEN_WHY = {
    "NonZero": "data-dependent output shape",
    "Loop": "control flow",
    "If": "control flow",
    "Scan": "control flow",
    "Unique": "unsupported by TensorRT",
    "Compress": "data-dependent output shape",
}


class GraphLintError(SedDeployError):
    """A graph TensorRT would reject or mis-handle."""


def _constant_values(graph: onnx.GraphProto) -> dict[str, object]:
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attr.t)
    return values


def _symbolic_tensors(model: onnx.ModelProto) -> set[str]:
    """Names of tensors with at least one symbolic (dynamic) dimension."""
    graph = model.graph
    symbolic = set()
    for info in (*graph.input, *graph.output, *graph.value_info):
        dims = info.type.tensor_type.shape.dim
        if any(d.dim_param or not d.HasField("dim_value") for d in dims):
            symbolic.add(info.name)
    return symbolic


def _node_problems(model: onnx.ModelProto) -> list[str]:
    graph = model.graph
    constants = _constant_values(graph)
    symbolic = _symbolic_tensors(model)
    problems = []
    for node in graph.node:
        where = f"{node.op_type} node '{node.name or node.output[0]}'"
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.domain not in ("", "ai.onnx"):
            if (node.domain, node.op_type) not in KNOWN_PLUGINS:
                problems.append(f"{where} in domain '{node.domain}' is not a known TensorRT plugin")
            continue
        if node.op_type in FORBIDDEN_WHY or node.op_type.startswith(("Sequence", "Optional")):
            why = FORBIDDEN_WHY.get(node.op_type, "sequence/optional types are unsupported")
            problems.append(f"{where} is forbidden ({why})")
        elif node.op_type not in ALLOWED_OPS:
            problems.append(f"{where} is not in the TensorRT allow-list")
        elif node.op_type == "Resize":
            mode = attrs.get("mode", b"nearest")
            mode = mode.decode() if isinstance(mode, bytes) else mode
            if mode not in ("nearest", "linear") or attrs.get("antialias", 0):
                problems.append(f"{where} uses mode={mode} antialias={attrs.get('antialias', 0)} (only "
                                "nearest/linear without antialias)")
        elif node.op_type == "TopK":
            k = constants.get(node.input[1]) if len(node.input) > 1 else None
            if k is None:
                problems.append(f"{where} has a K that is not a constant")
            elif int(k.reshape(-1)[0]) >= TOPK_LIMIT:
                problems.append(f"{where} has K={int(k.reshape(-1)[0])} >= {TOPK_LIMIT}")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            problems += _quantization_problems(node, where, constants)
        elif node.op_type == "Reshape":
            target = constants.get(node.input[1])
            if target is not None and node.input[0] in symbolic and not any(v in (-1, 0) for v in target.tolist()):
                problems.append(f"{where} reshapes a dynamic tensor to the constant shape {target.tolist()} "
                                "(a traced size baked in)")
    return problems


def _quantization_problems(node: onnx.NodeProto, where: str, constants: Mapping[str, object]) -> list[str]:
    """TensorRT reads Q/DQ with an int8 zero point of 0 only, and no int32 (bias) DequantizeLinear."""
    zero = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if zero is None or zero.dtype != "int8" or zero.any():
        got = "none" if zero is None else f"{zero.dtype} {zero.reshape(-1)[:3].tolist()}"
        return [f"{where} is not symmetric int8 (zero point {got}; TensorRT needs an int8 zero point of 0)"]
    return []


def _io_problems(model: onnx.ModelProto, declared: Mapping[str, Mapping[int, str]]) -> list[str]:
    problems = []
    for info in (*model.graph.input, *model.graph.output):
        want = declared.get(info.name, {})
        for axis, dim in enumerate(info.type.tensor_type.shape.dim):
            name = dim.dim_param if dim.dim_param else None
            if name is None and not dim.HasField("dim_value"):
                name = "?"
            if axis in want and name != want[axis]:
                got = name or dim.dim_value
                problems.append(f"'{info.name}' axis {axis} should be dynamic '{want[axis]}', got {got}")
            elif axis not in want and name is not None:
                problems.append(f"'{info.name}' axis {axis} is dynamic ('{name}') but not declared")
    return problems


def lint_graph(model: onnx.ModelProto, declared: Mapping[str, Mapping[int, str]]) -> list[str]:
    """All problems of a graph, as short sentences (empty if it passes).

    Args:
        model: the graph, with shapes inferred.
        declared: for each input/output name, its dynamic axes {axis: name}.
    """
    return _io_problems(model, declared) + _node_problems(model)


def check_graph(model: onnx.ModelProto, declared: Mapping[str, Mapping[int, str]], stage: str) -> None:
    """Raise `GraphLintError` naming the first problems, if any."""
    problems = lint_graph(model, declared)
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise GraphLintError(f"stage {stage} fails the TensorRT lint: " + "; ".join(problems[:3]) + more)
