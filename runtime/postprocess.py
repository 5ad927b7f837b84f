"""SED's post-processing, defined once for every backend (no torch).

Scores of the kept classes are resized bilinearly (PyTorch semantics) to the original image and
the label of a pixel is the class with the highest score; classes rejected early score exactly 0
(spec sections 2 and 8). The labels equal those of the straightforward computation (scatter into
all T classes, resize everything, argmax) without its [T,H,W] array and most of its work.

Inside one cell of the source grid a class's interpolated score is a convex combination of its
four corner values, so a class can only be the maximum there if its largest corner reaches the
best smallest corner of any class. In most cells of a trained model's score map one class
dominates: every output pixel of that cell gets it without any interpolation. The other pixels are
interpolated separably (each source row horizontally, then vertically: the same float32 operations
in the same order as the per-pixel formula) over bands of output rows, class by class with a running
argmax, skipping in each band the classes whose largest corner there stays below the band's
smallest winning floor. Everything runs on the [K,h,w] array as it is (no transpose, no padded
copy); a strict comparison keeps the lowest class on ties, as the full argmax does.
"""

from __future__ import annotations

import numpy as np

from .resize import linear_taps

BAND_ROWS = 32  # output rows interpolated at a time: [BAND_ROWS, width] temporaries per class


def sigmoid(x: np.ndarray) -> np.ndarray:
    """The logistic function 1 / (1 + exp(-x)) in float32, as PyTorch computes it.

    exp(-x) overflows to inf for x below about -88, which gives exactly 0, the float32 answer.
    """
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32, copy=False)


def label_map(scores: np.ndarray, class_ids: np.ndarray, height: int, width: int,
              band_rows: int = BAND_ROWS) -> np.ndarray:
    """Per-pixel class ids of the original image.

    Args:
        scores: sigmoid scores of the kept classes, [K,h,w] float32 (>= 0).
        class_ids: global ids of those classes, [K], ascending.
        height, width: size of the original image.
        band_rows: output rows interpolated together (memory: a few [band_rows, width] arrays).

    Returns:
        [height,width] int32. Every other class scores 0, so a pixel whose kept scores are all 0
        gets id 0, as the argmax over all classes would give.
    """
    scores = np.asarray(scores, dtype=np.float32)
    class_ids = np.asarray(class_ids, dtype=np.int64)
    rows = linear_taps(scores.shape[1], height)
    cols = linear_taps(scores.shape[2], width)
    low, high = _cell_reduce(scores, np.minimum), _cell_reduce(scores, np.maximum)
    leader = low.argmax(axis=0)  # [h,w]: the class with the best smallest corner
    floor = np.take_along_axis(low, leader[None], axis=0)[0]
    del low
    others = high.copy()
    np.put_along_axis(others, leader[None], -np.inf, axis=0)
    alone = (others.max(axis=0) < floor) & (floor > 0)  # the leader wins the whole cell
    del others
    labels = np.where(alone, class_ids[leader], -1).astype(np.int32)[rows[0]][:, cols[0]]
    if not alone.all():
        for top in range(0, height, band_rows):
            _interpolate_band(scores, high, floor, class_ids, rows, cols, labels, top, min(height, top + band_rows))
    return labels


def _cell_reduce(x: np.ndarray, fn) -> np.ndarray:
    """`fn` over the four corners of every source cell, [K,h,w] (last row and column repeated)."""
    rows = np.empty_like(x)
    fn(x[:, :-1], x[:, 1:], out=rows[:, :-1])
    rows[:, -1] = x[:, -1]
    out = np.empty_like(x)
    fn(rows[:, :, :-1], rows[:, :, 1:], out=out[:, :, :-1])
    out[:, :, -1] = rows[:, :, -1]
    return out


def _interpolate_band(scores, high, floor, class_ids, rows, cols, labels, top: int, bottom: int) -> None:
    """Labels of the undecided pixels of output rows [top, bottom), in place."""
    band = slice(top, bottom)
    todo = labels[band] < 0
    if not todo.any():
        return
    (row_lo, row_hi, wi_lo, wi_hi), (col_lo, col_hi, wj_lo, wj_hi) = rows, cols
    first, last = int(row_lo[top]), int(row_hi[bottom - 1])  # source rows the band reads
    cells = slice(first, int(row_lo[bottom - 1]) + 1)
    # a class whose largest corner in these cells is below every cell's floor cannot win here
    alive = np.flatnonzero(high[:, cells].max(axis=(1, 2)) >= floor[cells].min())
    a, b = row_lo[band] - first, row_hi[band] - first
    w_lo, w_hi = wi_lo[band, None], wi_hi[band, None]
    best = np.full((bottom - top, labels.shape[1]), -1.0, np.float32)
    winner = np.zeros(best.shape, np.int64)
    for c in alive:
        source = scores[c, first : last + 1]
        across = source[:, col_lo] * wj_lo + source[:, col_hi] * wj_hi  # [source rows, width]
        value = across[a] * w_lo + across[b] * w_hi
        better = value > best
        best[better] = value[better]
        winner[better] = c
    found = np.where(best > 0, class_ids[winner], 0).astype(np.int32)
    labels[band][todo] = found[todo]
