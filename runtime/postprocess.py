"""SED's post-processing, defined once for every backend (no torch).

Scores of the kept classes are resized bilinearly (PyTorch semantics) to the original image and
the label of a pixel is the class with the highest score; classes rejected early score exactly 0
(spec sections 2 and 8). The labels equal those of the straightforward computation (scatter into
all T classes, resize everything, argmax) without its [T,H,W] array and most of its work.

Inside one cell of the source grid a class's interpolated score is a convex combination of its
four corner values, so a class can only be the maximum there if its largest corner reaches the
best smallest corner of any class. In most cells of a real score map one class dominates: every
output pixel of that cell gets it without any interpolation. Only the pixels of the other cells
(near region boundaries) are interpolated, for their few candidate classes, in class order so that
ties resolve to the lowest class id as the full argmax does.
"""

from __future__ import annotations

import numpy as np

from .resize import linear_taps

DEFAULT_BUDGET_BYTES = 64 << 20


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-x)) in float32, as PyTorch computes it.

    exp(-x) overflows to inf for x below about -88, which gives exactly 0, the float32 answer.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


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
        budget_bytes: rough bound on the temporary arrays of the interpolation step.

    Returns:
        [height,width] int32. Every other class scores 0, so a pixel whose kept scores are all 0
        gets id 0, as the argmax over all classes would give.
    """
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    rows = linear_taps(scores.shape[1], height)
    cols = linear_taps(scores.shape[2], width)
    cand, corners = _cell_candidates(scores)  # [h,w,C] and 4 x [h,w,C]
    decided = _decided_cells(cand, corners)
    cell_label = np.where(decided >= 0, class_ids[np.maximum(decided, 0)], -1)
    labels = cell_label.astype(np.int32)[rows[0]][:, cols[0]]
    ys, xs = np.nonzero(labels < 0)
    chunk = max(1, budget_bytes // max(1, 40 * cand.shape[-1]))
    for start in range(0, len(ys), chunk):
        y, x = ys[start : start + chunk], xs[start : start + chunk]
        labels[y, x] = _interpolated_argmax(cand, corners, class_ids, rows, cols, y, x)
    return labels


def _cell_candidates(scores: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """For every source cell (i, j)-(i+1, j+1), the classes that can be the maximum inside it.

    Returns their indices [h,w,C] (ascending per cell, C = the largest count; cells with fewer
    candidates are padded with classes that cannot win there) and the four corner values
    (top-left, top-right, bottom-left, bottom-right) of those classes, [h,w,C] each.
    """
    num = scores.shape[0]
    # classes last (reductions run contiguous), edge row and column repeated: the four corners of
    # every cell are then views, with no copies
    padded = np.pad(scores.transpose(1, 2, 0), ((0, 1), (0, 1), (0, 0)), mode="edge")
    quad = [padded[:-1, :-1], padded[:-1, 1:], padded[1:, :-1], padded[1:, 1:]]
    floor = np.minimum(np.minimum(quad[0], quad[1]), np.minimum(quad[2], quad[3])).max(axis=-1, keepdims=True)
    reach = np.maximum(np.maximum(quad[0], quad[1]), np.maximum(quad[2], quad[3]))
    count = int((reach >= floor).sum(axis=-1).max())
    if count >= num:
        return np.broadcast_to(np.arange(num), reach.shape), quad
    cand = np.argpartition(-reach, count - 1, axis=-1)[..., :count]
    cand.sort(axis=-1)
    return cand, [np.take_along_axis(c, cand, axis=-1) for c in quad]


def _decided_cells(cand: np.ndarray, corners: list[np.ndarray]) -> np.ndarray:
    """Per cell, the class index that wins everywhere in it, or -1 where it must be interpolated.

    A class wins a whole cell if its smallest corner beats every other class's largest corner and
    is above 0 (a pixel where every class scores 0 is labelled 0, which needs interpolation).
    """
    low = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))  # [h,w,C]
    high = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    leader = low.argmax(axis=-1)[..., None]  # the class with the best smallest corner
    floor = np.take_along_axis(low, leader, axis=-1)[..., 0]
    np.put_along_axis(high, leader, -np.inf, axis=-1)
    alone = (high.max(axis=-1, initial=-np.inf) < floor) & (floor > 0)
    return np.where(alone, np.take_along_axis(cand, leader, axis=-1)[..., 0], -1)


def _interpolated_argmax(cand, corners, class_ids, rows, cols, y, x) -> np.ndarray:
    """Labels of output pixels (y, x) by interpolating their cells' candidates."""
    i, wi_lo, wi_hi = rows[0][y, None], rows[2][y, None], rows[3][y, None]
    j, wj_lo, wj_hi = cols[0][x, None], cols[2][x, None], cols[3][x, None]
    tl, tr, bl, br = (c[i[:, 0], j[:, 0]] for c in corners)  # [P,C]
    value = (tl * wj_lo + tr * wj_hi) * wi_lo + (bl * wj_lo + br * wj_hi) * wi_hi
    best = value.argmax(axis=-1)[:, None]
    best_value = np.take_along_axis(value, best, axis=-1)[:, 0]
    winner = np.take_along_axis(cand[i[:, 0], j[:, 0]], best, axis=-1)[:, 0]
    return np.where(best_value > 0, class_ids[winner], 0)
