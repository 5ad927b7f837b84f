"""Estimated device memory of a build plan, per stage and profile, and the `--memory-budget` check.

What the TensorRT backend holds at once, and how each part is estimated at a profile's max shapes:

- weights: every engine stays loaded; estimated as the size of the graph file it is built from
  (initializers dominate; an fp16 graph's are half).
- I/O: each stage's input and output buffers (the runtime allocates them; outputs stay for the next
  stage), from the manifest's tensor shapes at the profile's max sizes.
- scratch: TensorRT's activation memory. The stages run one after another and share one scratch
  area, so the pipeline needs the largest one. Estimated from the activation profile that sed-export
  records per graph (`export/memory_profile.py`: peak live intermediate tensors in graph order);
  halved for fp16 engines. Artifacts exported before that have no estimate: the report says so.

The pipeline total is weights of all stages + the I/O of each stage at its largest profile + the
largest scratch. TensorRT's own figure (`get_device_memory_size_for_profile_v2`) is known only after
a build; the estimate is for deciding --max-classes before spending a build on a device.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.manifest import StageSpec

MB = 1 << 20


@dataclass(frozen=True)
class ProfileMemory:
    """Estimated bytes of one stage at one profile's max shapes (profile -1: a static stage)."""

    stage: str
    profile: int
    sizes: dict[str, int]
    weights: int
    io: int
    scratch: int | None

    @property
    def label(self) -> str:
        if self.profile < 0:
            return "static"
        return " ".join(f"{a}={v}" for a, v in sorted(self.sizes.items()))


def axis_sizes(spec: StageSpec, profile: dict[str, list[list[int]]]) -> dict[str, int]:
    """The named axes of a stage at the profile's max shapes."""
    sizes: dict[str, int] = {}
    for tensor in spec.inputs:
        if tensor.name in profile:
            for axis, name in tensor.dynamic_axes.items():
                sizes[name] = int(profile[tensor.name][2][axis])
    return sizes


def io_bytes(spec: StageSpec, sizes: dict[str, int]) -> int:
    total = 0
    for tensor in (*spec.inputs, *spec.outputs):
        dims = [sizes.get(d, 1) if isinstance(d, str) else d for d in tensor.shape]
        total += int(np.prod(dims, dtype=np.int64)) * np.dtype(tensor.dtype).itemsize
    return total


def scratch_bytes(spec: StageSpec, sizes: dict[str, int], fp16: bool) -> int | None:
    profile = spec.memory.get("activations") if spec.memory else None
    if not profile or not profile.get("steps"):
        return None
    values = [1] + [sizes.get(a, 1) for a in profile["axes"]]
    peak = max(int(np.dot(step, values)) for step in profile["steps"])
    return peak // 2 if fp16 else peak


def weight_bytes(folder: Path, graph: str) -> int:
    path = Path(folder) / graph
    data = path.with_name(path.name + ".data")  # external initializers of large graphs
    return sum(p.stat().st_size for p in (path, data) if p.is_file())


def stage_memory(spec: StageSpec, folder: Path, graph: str, fp16: bool,
                 plan: list[dict[str, list[list[int]]]]) -> list[ProfileMemory]:
    """One estimate per profile of the plan (one for a static stage)."""
    weights = weight_bytes(folder, graph)
    if not plan:
        return [ProfileMemory(spec.name, -1, {}, weights, io_bytes(spec, {}), scratch_bytes(spec, {}, fp16))]
    rows = []
    for k, profile in enumerate(plan):
        sizes = axis_sizes(spec, profile)
        scratch = scratch_bytes(spec, sizes, fp16)
        rows.append(ProfileMemory(spec.name, k, sizes, weights, io_bytes(spec, sizes), scratch))
    return rows


def pipeline_total(rows: list[ProfileMemory]) -> tuple[int, ProfileMemory]:
    """(bytes the pipeline holds at its largest profiles, the row whose scratch is the largest)."""
    by_stage: dict[str, list[ProfileMemory]] = {}
    for row in rows:
        by_stage.setdefault(row.stage, []).append(row)
    weights = sum(r[0].weights for r in by_stage.values())
    io = sum(max(x.io for x in r) for r in by_stage.values())
    worst = max(rows, key=lambda r: r.scratch or 0)
    return weights + io + (worst.scratch or 0), worst


def describe_rows(rows: list[ProfileMemory]) -> list[str]:
    """The --dry-run table, in MB."""
    if not rows:
        return []
    lines = [f"{'memory estimate (MB)':<34} {'weights':>8} {'I/O':>8} {'scratch':>8}"]
    for row in rows:
        scratch = f"{row.scratch / MB:8.1f}" if row.scratch is not None else "     n/a"
        lines.append(f"  {row.stage:<14} {row.label:<17} {row.weights / MB:8.1f} {row.io / MB:8.1f} {scratch}")
    total, worst = pipeline_total(rows)
    lines.append(f"  pipeline at the largest profiles: about {total / MB:.0f} MB (largest scratch: {worst.stage} "
                 f"{worst.label})")
    if any(r.scratch is None for r in rows):
        lines.append("  (n/a: artifacts exported without an activation profile; re-export for the scratch estimate)")
    return lines


def check_budget(rows: list[ProfileMemory], budget_mb: int) -> None:
    """Raise `ConfigError` with the numbers when the plan cannot fit `budget_mb`."""
    total, worst = pipeline_total(rows)
    if total <= budget_mb * MB:
        return
    per_class = ""
    classes = max(worst.sizes.values(), default=0)
    if classes > 1 and worst.scratch:
        per_class = f"; {worst.stage} needs about {(worst.scratch + worst.io) / classes / MB:.1f} MB per class"
    raise ConfigError(f"the plan needs about {total / MB:.0f} MB of device memory (largest scratch: {worst.stage} "
                      f"{worst.label}), more than --memory-budget {budget_mb} MB: lower --max-classes or build "
                      f"--precision fp16{per_class}")
