"""Forced keep: every pruned stage keeps exactly N classes, the N "highest-scoring" ones.

With random weights the aux heads keep nearly every class, so real category early rejection prunes
little; `sed-bench --keep N` measures what trained weights would give (the paper's model keeps a few
tens of classes on PC-459) by replacing the pipeline's keep policy with this one.

The graphs return only per-pixel top-K index maps ([K,h,w] int32, best first; indices >= the class
count are padding), not scores, so "highest-scoring" is defined from those maps. Classes are ranked
by, in order:

1. the number of pixels where the class is among the first k (k of the run), more first;
2. its best rank at any pixel over the whole K list, better first;
3. its index, lower first (a deterministic tie-break for classes that never appear).

The N best are kept, in ascending index order as the pipeline expects; with N >= the class count
every class is kept.
"""

from __future__ import annotations

import numpy as np

from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.pipeline import KeepPolicy


def rank_classes(topk: np.ndarray, k: int, num_classes: int) -> np.ndarray:
    """Local class indices [num_classes] int64, best first, by the ranking of the module docstring.

    Args:
        topk: [K,h,w] int32 top-K class indices per pixel, best first.
        k: how many of the K count as votes (criterion 1).
        num_classes: classes alive at this stage.
    """
    rows = topk.reshape(topk.shape[0], -1)
    first = rows[:k].reshape(-1)
    votes = np.bincount(first[first < num_classes], minlength=num_classes)[:num_classes]
    best = np.full(num_classes, rows.shape[0], dtype=np.int64)
    for rank in range(rows.shape[0] - 1, -1, -1):  # better ranks overwrite worse ones
        ids = rows[rank]
        best[ids[ids < num_classes]] = rank
    return np.lexsort((np.arange(num_classes), best, -votes))


def forced_keep(n: int) -> KeepPolicy:
    """A keep policy for `Pipeline.keep_policy` that keeps the `n` best classes of each stage."""
    if n < 1:
        raise ConfigError(f"--keep must be at least 1, got {n}")

    def keep(topk: np.ndarray, k: int, num_classes: int) -> np.ndarray:
        if n >= num_classes:
            return np.arange(num_classes, dtype=np.int32)
        return np.sort(rank_classes(topk, k, num_classes)[:n]).astype(np.int32)

    return keep
