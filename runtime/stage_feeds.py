"""Random inputs of a stage at given sizes of its dynamic axes (numpy, for checks without torch)."""

from __future__ import annotations

import numpy as np

from sed_deploy.core.contract import CLASS_AXIS, EOT_TOKEN, KEEP, SOT_TOKEN, TOKENS
from sed_deploy.core.manifest import StageSpec


def random_feeds(spec: StageSpec, sizes: dict[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Valid random feeds: normal floats, `keep` indices into the gathered axis, CLIP-like tokens."""
    feeds: dict[str, np.ndarray] = {}
    gathered = next((t.dynamic_axes[0] for t in spec.inputs[1:] if 0 in t.dynamic_axes), CLASS_AXIS)
    for tensor in spec.inputs:
        dims = [sizes[d] if isinstance(d, str) else d for d in tensor.shape]
        if tensor.name == KEEP:
            feeds[KEEP] = rng.integers(0, sizes[gathered], dims).astype(np.int32)
        elif tensor.name == TOKENS:
            tokens = np.zeros(dims, dtype=np.int64)
            tokens[:, 0] = SOT_TOKEN
            for row in range(dims[0]):
                if dims[1] == 1:  # the shortest profile shape: room for the end token only
                    tokens[row, 0] = EOT_TOKEN
                    continue
                end = dims[1] - 1 if row == 0 else int(rng.integers(1, dims[1]))
                tokens[row, 1:end] = rng.integers(1, 49000, end - 1)
                tokens[row, end] = EOT_TOKEN
            feeds[TOKENS] = tokens
        else:
            feeds[tensor.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def check_sizes(spec: StageSpec, class_counts: tuple[int, ...]) -> list[dict[str, int]]:
    """Dynamic sizes to check a stage at: each class count, about half of it kept."""
    axes = sorted({a for t in spec.inputs for a in t.dynamic_axes.values()}, key=lambda a: (len(a), a))
    if not axes:
        return [{}]
    if set(axes) == {"M", "L"}:
        return [{"M": c, "L": min(77, 4 + c % 74)} for c in class_counts]
    if len(axes) == 1:
        return [{axes[0]: c} for c in class_counts]
    return [{axes[0]: c, axes[1]: max(1, (c + 1) // 2)} for c in class_counts]


def plan_sizes(spec: StageSpec, plan: list[dict[str, list[list[int]]]]) -> list[dict[str, int]]:
    """Sizes of the dynamic axes at the smallest and the largest shape of every profile of a plan."""
    if not plan:
        return [{}]
    sizes = []
    for profile in plan:
        for which in (0, 2):  # min and max
            entry: dict[str, int] = {}
            for tensor in spec.inputs:
                if tensor.name in profile:
                    for axis, name in tensor.dynamic_axes.items():
                        entry[name] = profile[tensor.name][which][axis]
            if entry not in sizes:
                sizes.append(entry)
    return sizes
