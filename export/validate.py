"""Validation of each stage graph against its PyTorch module, with ONNX Runtime on the CPU.

Both run on the same random inputs at several class counts. Float outputs are compared by their
relative error: max |onnx - torch| / max |torch| (the error measured against the output's scale,
which is what a downstream argmax or top-k can feel). fp32 through ONNX Runtime stays under 1e-4.
Top-k index outputs are compared through the PyTorch logits: the scores at the graph's indices must
equal PyTorch's k best scores per pixel, so ties or near-ties ordered differently do not count as
errors but a wrong class does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sed_deploy.core.errors import SedDeployError
from sed_deploy.core.optional import require

from .onnx_export import sample_inputs
from .stages import Stage

FP32_TOLERANCE = 1e-4


class ValidationError(SedDeployError):
    """A graph whose outputs differ from PyTorch beyond the tolerance."""


@dataclass
class CaseResult:
    """One stage at one set of dynamic sizes: error per output."""

    sizes: dict[str, int]
    errors: dict[str, dict[str, float]] = field(default_factory=dict)

    def worst(self) -> float:
        return max((e["rel"] for e in self.errors.values()), default=0.0)


def cases_for(stage: Stage, class_counts: Sequence[int]) -> list[dict[str, int]]:
    """Dynamic sizes to validate a stage at, from a list of class counts."""
    axes = {a for dims in stage.CONTRACT.dynamic.values() for a in dims.values()}
    if not axes:
        return [{}]
    cases = []
    for count in class_counts:
        if axes == {"M", "L"}:  # text encoder: count prompts of lengths growing with the count
            cases.append({"M": count, "L": min(77, 4 + count % 74)})
        elif axes == {"T"}:
            cases.append({"T": count})
        else:  # decoder: previous class count -> about half of it kept
            prev, cur = sorted(axes, key=lambda a: (len(a), a))
            cases.append({prev: count, cur: max(1, (count + 1) // 2)})
    return cases


def ort_session(path: str | Path, threads: int | None = None, plugins: bool = False):
    """A CPU ONNX Runtime session for a graph file (`plugins`: with the plugin node's custom op)."""
    ort = require("onnxruntime", "validating graphs")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if plugins:
        from sed_deploy.kernels.ort_plugin import ort_session_options

        options = ort_session_options(options)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _topk_error(indices: np.ndarray, logits: torch.Tensor, k: int) -> float:
    """Relative error of the scores at the graph's top-k indices against the true k best."""
    num = logits.shape[0]
    padded = torch.cat([logits, logits.new_full((k, *logits.shape[1:]), -1e30)]).numpy()
    picked = np.take_along_axis(padded, indices.astype(np.int64), axis=0)
    best = -np.sort(-padded, axis=0)[:k]
    real = best > -1e29
    if not np.array_equal(picked > -1e29, real) or indices.min() < 0 or indices.max() >= num + k:
        return float("inf")
    scale = max(float(np.abs(best[real]).max(initial=0.0)), 1e-12)
    return float(np.abs(picked[real] - best[real]).max(initial=0.0)) / scale


def compare_case(stage: Stage, session, sizes: Mapping[str, int], seed: int) -> CaseResult:
    """Run torch and ONNX Runtime on the same inputs and measure the error of every output."""
    inputs = sample_inputs(stage, sizes, torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        expected = stage(*inputs)
    feeds = {n: t.numpy() for n, t in zip(stage.CONTRACT.inputs, inputs, strict=True)}
    got = session.run(list(stage.CONTRACT.outputs), feeds)
    result = CaseResult(sizes=dict(sizes))
    for name, ref, out in zip(stage.CONTRACT.outputs, expected, got, strict=True):
        if out.shape != tuple(ref.shape):
            result.errors[name] = {"max_abs": float("inf"), "rel": float("inf")}
        elif name == stage.CONTRACT.topk_output:
            with torch.inference_mode():
                rel = _topk_error(out, stage.topk_logits(expected), stage.k)
            result.errors[name] = {"max_abs": 0.0 if rel == 0 else float("nan"), "rel": rel}
        else:
            ref = ref.numpy()
            max_abs = float(np.abs(out - ref).max(initial=0.0))
            scale = max(float(np.abs(ref).max(initial=0.0)), 1e-12)
            result.errors[name] = {"max_abs": max_abs, "rel": max_abs / scale}
    return result


def validate_stage(
    stage: Stage, path: str | Path, class_counts: Sequence[int], tolerance: float = FP32_TOLERANCE, seed: int = 0,
    plugins: bool = False,
) -> list[CaseResult]:
    """Compare a graph with its stage module at every case; raise `ValidationError` above tolerance."""
    session = ort_session(path, plugins=plugins)
    results = [compare_case(stage, session, sizes, seed + i) for i, sizes in enumerate(cases_for(stage, class_counts))]
    for case in results:
        for name, err in case.errors.items():
            if not err["rel"] <= tolerance:
                raise ValidationError(
                    f"stage {stage.name}: output {name} at {case.sizes} differs from PyTorch by relative error "
                    f"{err['rel']:.2e} (tolerance {tolerance:.0e})"
                )
    return results
