"""Work per stage (multiply-adds from the ONNX graphs) and the machine's measured matmul rate.

Multiply-adds (MACs) are counted on each stage graph with ONNX shape inference at concrete class
counts: every dynamic class axis of the stage's inputs (T, T1, T2, T3) is set to the same number n,
weights are turned into shape-only graph inputs (so no weight is copied into the inference), and
the nodes that do the arithmetic are counted from their shapes:

| op | multiply-adds |
|---|---|
| Conv | output elements x (input channels / groups) x kernel area |
| ConvTranspose | input elements x (output channels / groups) x kernel area |
| MatMul | output elements x the contracted size |
| Gemm | M x N x K |
| Einsum | product of the sizes of all its indices |

Elementwise ops, normalisations and reductions are not counted (they are memory-bound and a few
percent of the arithmetic). Every stage of SED is affine in its class count (per-class convs, linear
attention along the class axis), so a stage is described by `fixed + per_class * n`, measured at
n = 1 and n = 2 and checked at a third count. One FLOP is half a multiply-add here: GFLOP/s =
2 x MACs / seconds / 1e9, the convention of matmul peak figures.

The practical peak is a large float32 matrix product timed in the same run (`matmul_peak`): the best
of numpy's BLAS, onnxruntime's MatMul and, when torch is already imported, torch's.
"""

from __future__ import annotations

import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.optional import available, require

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum")
# initializers up to this many elements stay constants (shape tensors that data propagation needs)
_KEEP_CONSTANT = 64


@dataclass(frozen=True)
class StageWork:
    """Multiply-adds of one stage as an affine function of its class count n.

    Attributes:
        fixed: MACs that do not depend on n (the whole image encoder).
        per_class: MACs per class alive at this stage.
        uncounted: arithmetic nodes (of `COUNTED_OPS`) whose shapes could not be inferred.
    """

    fixed: int
    per_class: int
    uncounted: int = 0

    def macs(self, classes: float) -> float:
        return self.fixed + self.per_class * classes

    def to_dict(self) -> dict:
        return {"fixed_macs": self.fixed, "macs_per_class": self.per_class, "uncounted_nodes": self.uncounted}


def _dims(value_info) -> list[int] | None:
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    return None if any(d is None or d < 0 for d in dims) else dims


def _concrete_model(path: Path, classes: int):
    """The graph with every dynamic input axis set to `classes` and big weights as inputs."""
    onnx = require("onnx", "counting the work of each stage")
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    for tensor in graph.input:
        for dim in tensor.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") or not dim.HasField("dim_value"):
                dim.dim_value = classes
    constants = []
    for init in graph.initializer:
        if int(np.prod(init.dims)) <= _KEEP_CONSTANT:
            constants.append(init)
        else:
            graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    del graph.initializer[:]
    graph.initializer.extend(constants)
    return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)


def _einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    sizes = {}
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    for term, shape in zip(inputs, shapes, strict=False):
        letters = [c for c in term if c in string.ascii_letters]
        if "..." in term or len(letters) != len(shape):
            return 0
        sizes.update(zip(letters, shape, strict=True))
    return int(np.prod(list(sizes.values()), dtype=np.int64))


def _node_macs(node, shapes: dict[str, list[int]]) -> int | None:
    """Multiply-adds of one node, or None if a shape it needs is unknown."""
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    attrs = {a.name: a for a in node.attribute}
    if node.op_type == "Conv":
        if out is None or ins[1] is None:
            return None
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(ins[1][1:], dtype=np.int64))
    if node.op_type == "ConvTranspose":
        if ins[0] is None or ins[1] is None:
            return None
        return int(np.prod(ins[0], dtype=np.int64)) * (ins[1][1]) * int(np.prod(ins[1][2:], dtype=np.int64))
    if node.op_type in ("MatMul", "Gemm"):
        if out is None or ins[0] is None:
            return None
        transposed = node.op_type == "Gemm" and "transA" in attrs and attrs["transA"].i
        contracted = ins[0][0] if transposed else ins[0][-1]
        return int(np.prod(out, dtype=np.int64)) * contracted
    if node.op_type == "Einsum":
        if any(s is None for s in ins):
            return None
        return _einsum_macs(attrs["equation"].s.decode(), ins)
    return 0


def graph_macs(path: str | Path, classes: int) -> tuple[int, int]:
    """(multiply-adds, nodes left uncounted) of one stage graph with `classes` classes alive."""
    model = _concrete_model(Path(path), classes)
    graph = model.graph
    shapes = {}
    for info in (*graph.input, *graph.value_info, *graph.output):
        dims = _dims(info)
        if dims is not None:
            shapes[info.name] = dims
    for init in graph.initializer:
        shapes[init.name] = list(init.dims)
    total, uncounted = 0, 0
    for node in graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            uncounted += 1
        else:
            total += macs
    return total, uncounted


def stage_work(path: str | Path, check_at: int = 17) -> StageWork:
    """Fit `fixed + per_class * n` from n = 1 and 2; raise `ArtifactError` if n = `check_at` disagrees."""
    (one, u1), (two, u2) = graph_macs(path, 1), graph_macs(path, 2)
    work = StageWork(fixed=2 * one - two, per_class=two - one, uncounted=max(u1, u2))
    found, _ = graph_macs(path, check_at)
    if found != work.macs(check_at):
        raise ArtifactError(f"{Path(path).name}: multiply-adds are not affine in the class count "
                            f"(expected {work.macs(check_at)} at {check_at} classes, got {found})")
    return work


def artifacts_work(manifest: Manifest, folder: str | Path, stages: tuple[str, ...]) -> dict[str, StageWork]:
    """`StageWork` of each of `stages` in an artifacts folder."""
    return {name: stage_work(Path(folder) / manifest.stages[name].file) for name in stages}


def gflops(macs: float, seconds: float) -> float:
    """Achieved GFLOP/s (1 multiply-add = 2 FLOP)."""
    return 2.0 * macs / seconds / 1e9 if seconds > 0 else 0.0


def _best_seconds(matmul, repeats: int) -> float:
    matmul()  # warm-up: thread pools, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul()
        best = min(best, time.perf_counter() - start)
    return best


def _ort_matmul(a: np.ndarray, threads: int | None):
    """A one-node MatMul graph on onnxruntime's CPU provider, as a callable; None if onnx or onnxruntime is missing."""
    if not (available("onnx") and available("onnxruntime")):
        return None
    onnx, ort = require("onnx"), require("onnxruntime")
    tensor = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, list(a.shape)) for n in ("a", "b", "c")]
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul", tensor[:2],
                                   tensor[2:])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"a": a, "b": a}
    return lambda: session.run(None, feeds)


def matmul_peak(libraries: tuple[str, ...] = ("numpy", "onnxruntime"), size: int = 4096, repeats: int = 3,
                threads: int | None = None) -> dict:
    """The machine's practical float32 peak: the best rate of [size,size] @ [size,size] over `libraries`.

    Libraries differ (on AVX-512 machines numpy's BLAS may not use the widest units while
    onnxruntime's MLAS does), so the peak is the best of them. torch is measured only if it is
    already imported (never imported here); a library that is not installed is left out.

    Returns:
        {"gflops": the best rate, "size", "repeats", "rates": {library: GFLOP/s}}.
    """
    a = np.random.default_rng(0).standard_normal((size, size), dtype=np.float32)
    calls = {}
    if "numpy" in libraries:
        calls["numpy"] = lambda: np.matmul(a, a)
    if "onnxruntime" in libraries and (ort_call := _ort_matmul(a, threads)) is not None:
        calls["onnxruntime"] = ort_call
    torch = sys.modules.get("torch")
    if "torch" in libraries and torch is not None:
        ta = torch.from_numpy(a)
        calls["torch"] = lambda: torch.mm(ta, ta)
    rates = {name: round(gflops(float(size) ** 3, _best_seconds(call, repeats)), 2) for name, call in calls.items()}
    return {"gflops": max(rates.values(), default=0.0), "size": size, "repeats": repeats, "rates": rates}
