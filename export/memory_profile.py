"""The activation memory of a stage graph as a function of its class axes, recorded in the manifest.

`sed-build --dry-run` estimates each engine's device memory on machines without onnx (a Jetson), so
the graph's tensor sizes are measured here, at export. The graph's shapes are inferred (onnx, with
data propagation) at small concrete sizes of its dynamic axes; each intermediate tensor's size is a
linear function of them (every tensor has at most one class axis; the text stage is measured at its
longest prompt, L = 77, and is linear in the prompt count M), found from one size per axis plus one,
and checked at a third point. Then the nodes are run in graph order on paper: a tensor is live from
the node that makes it to its last reader, graph inputs and outputs excluded (the runtime owns those
buffers). The live bytes after each node are a linear form c0 + sum(c_a * a); the forms no other
form dominates in every coefficient are stored, since only they can be the peak at some sizes:

    {"axes": ["T", "T1"], "fixed": {}, "steps": [[c0, c_T, c_T1], ...], "skipped": n}

Peak live bytes in graph order over-estimates what TensorRT keeps (it fuses layers and their
intermediates disappear) and ignores its workspace; it is the order of magnitude a budget needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

TEXT_FIXED = {"L": 77}  # the text stage is measured at the longest prompt
BASE = 2  # the concrete size of every dynamic axis at the first point
FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16)


def _sizes_at(model: onnx.ModelProto, axes: dict[str, int]) -> dict[str, int]:
    """Bytes of every tensor whose shape inference resolves, with the dynamic axes set to `axes`."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in model.graph.input:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in axes:
                dim.dim_value = axes[dim.dim_param]
    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    sizes = {}
    for value in [*inferred.graph.value_info, *inferred.graph.output]:
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim]
        if kind.HasField("shape") and -1 not in dims and kind.elem_type:
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kind.elem_type)).itemsize
            sizes[value.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    return sizes


def _without_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with the data of large float initializers dropped (their dims stay): shape inference
    needs only their shapes, and a B graph is then kilobytes to copy instead of hundreds of MB."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    for tensor in light.graph.initializer:
        if tensor.data_type in FLOAT_TYPES and int(np.prod(tensor.dims, dtype=np.int64)) > 64:
            for name in ("raw_data", "float_data", "int32_data", "external_data"):
                tensor.ClearField(name)
            tensor.data_location = onnx.TensorProto.DEFAULT
    return light


def activation_profile(path: str | Path, fixed: dict[str, int] | None = None) -> dict:
    """The stored form of a graph's activation memory (see the module docstring)."""
    model = _without_weights(onnx.load(str(path), load_external_data=False))
    fixed = dict(fixed or {})
    axes = sorted({d.dim_param for v in model.graph.input for d in v.type.tensor_type.shape.dim
                   if d.dim_param and d.dim_param not in fixed})
    base = {a: BASE for a in axes} | fixed
    at_base = _sizes_at(model, base)
    slopes = {a: _sizes_at(model, base | {a: BASE + 1}) for a in axes}
    check = _sizes_at(model, base | {a: BASE + 2 for a in axes})
    coefficients: dict[str, list[int]] = {}
    for name, size in at_base.items():
        slope = [slopes[a].get(name, -1) - size for a in axes]
        const = size - BASE * sum(slope)
        predicted = const + (BASE + 2) * sum(slope)
        if all(slopes[a].get(name, -1) >= 0 for a in axes) and check.get(name) == predicted:
            coefficients[name] = [const, *slope]
    boundary = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    steps, skipped = _live_forms(model.graph, coefficients, boundary, len(axes))
    return {"axes": axes, "fixed": fixed, "steps": steps, "skipped": skipped}


def _live_forms(graph: onnx.GraphProto, coefficients: dict[str, list[int]], boundary: set[str],
                num_axes: int) -> tuple[list[list[int]], int]:
    last_use: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        for name in node.output:
            last_use[name] = i  # freed right away when nothing reads it
        for name in node.input:
            last_use[name] = i
    live = np.zeros(num_axes + 1, dtype=np.int64)
    forms, skipped, counted = set(), 0, set()
    for i, node in enumerate(graph.node):
        for name in node.output:
            if not name or name in boundary:
                continue
            if name not in coefficients:
                skipped += 1
                continue
            live += coefficients[name]
            counted.add(name)
        forms.add(tuple(int(x) for x in live))
        for name in {*node.input, *node.output}:
            if last_use.get(name) == i and name in counted:
                live -= coefficients[name]
                counted.discard(name)
    kept = [f for f in forms if not any(o != f and all(a >= b for a, b in zip(o, f, strict=False)) for o in forms)]
    return sorted(list(f) for f in kept), skipped
