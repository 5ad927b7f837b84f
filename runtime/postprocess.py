"""SED's post-processing, defined once for every backend (no torch).

Scores of the kept classes are resized bilinearly (PyTorch semantics) to the original image and
the label of a pixel is the class with the highest score; classes rejected early score exactly 0
(spec sections 2 and 8). The resize is done in bands of output rows, so that a large image never
needs a [T,H,W] array at full resolution; the labels equal those of the straightforward
computation (scatter into all T classes, resize everything, argmax).
"""

from __future__ import annotations

import numpy as np

from .resize import linear_taps, resize_cols

DEFAULT_BUDGET_BYTES = 64 << 20


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    x = np.asarray(x, dtype=np.float32)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def label_map(
    scores: np.ndarray,
    class_ids: np.ndarray,
    height: int,
    width: int,
    budget_bytes: int = DEFAULT_BUDGET_BYTES,
) -> np.ndarray:
    """Per-pixel class ids of the original image.

    Args:
        scores: sigmoid scores of the kept classes, [K,h,w] float32 (>= 0).
        class_ids: global ids of those classes, [K], ascending.
        height, width: size of the original image.
        budget_bytes: bound on the temporary [K,band,W] array.

    Returns:
        [height,width] int32. Every other class scores 0, so a pixel whose kept scores are all 0
        gets id 0, as the argmax over all classes would give.
    """
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    num_kept = scores.shape[0]
    rows = linear_taps(scores.shape[1], height)
    cols = linear_taps(scores.shape[2], width)
    band = max(1, min(height, budget_bytes // max(1, num_kept * width * 4 * 2)))
    labels = np.empty((height, width), dtype=np.int32)
    for top in range(0, height, band):
        sl = slice(top, min(top + band, height))
        lo, hi, w_lo, w_hi = (t[sl] for t in rows)
        vertical = scores[:, lo, :] * w_lo[:, None] + scores[:, hi, :] * w_hi[:, None]  # [K,band,w]
        full = resize_cols(vertical, cols)  # [K,band,W]
        best = full.argmax(axis=0)
        top_score = np.take_along_axis(full, best[None], axis=0)[0]
        labels[sl] = np.where(top_score > 0, class_ids[best], 0)
    return labels
