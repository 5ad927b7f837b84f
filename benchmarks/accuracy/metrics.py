"""Segmentation metrics from a streaming confusion matrix, and the cost of category early rejection.

The confusion matrix C is [N,N] int64, rows the ground-truth class and columns the predicted one;
pixels whose ground truth is the ignore index are left out of every count. Its memory depends on the
vocabulary only, never on the number of images. From it, per class c (as in the PASCAL VOC and
Cityscapes benchmarks):

    IoU_c = C[c,c] / (sum_j C[c,j] + sum_i C[i,c] - C[c,c])      accuracy_c = C[c,c] / sum_j C[c,j]

mIoU and mean accuracy average over the classes present in the ground truth; frequency-weighted IoU
weights each IoU_c by the share of ground-truth pixels of class c; pixel accuracy is trace / total.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.errors import SedDeployError


class EvaluationError(SedDeployError):
    """A dataset or a prediction that cannot be evaluated."""


class ConfusionMatrix:
    """[N,N] int64 pixel counts, rows ground truth, columns prediction, accumulated image by image."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise EvaluationError(f"expected at least one class, got {num_classes}")
        self.num_classes = num_classes
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def count(self, gt: np.ndarray, pred: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
        """The confusion matrix of one image, [N,N] int64, without adding it.

        Args:
            gt: [H,W] integer ground truth: class ids, or `ignore_index`.
            pred: [H,W] integer predicted class ids.
            ignore_index: ground-truth value excluded from the counts.
        """
        gt, pred = np.asarray(gt), np.asarray(pred)
        if gt.shape != pred.shape:
            raise EvaluationError(f"expected a prediction of the ground truth's size {list(gt.shape)}, "
                                  f"got {list(pred.shape)}")
        n = self.num_classes
        valid = gt != ignore_index if ignore_index is not None else np.ones(gt.shape, dtype=bool)
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        for what, values in (("ground-truth", g), ("predicted", p)):
            if values.size and (values.min() < 0 or values.max() >= n):
                bad = values[(values < 0) | (values >= n)]
                raise EvaluationError(f"{what} class ids must be in [0, {n}), got {bad.size} pixel(s) "
                                      f"such as {int(bad[0])}")
        return np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def update(self, gt: np.ndarray, pred: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
        """Add one image; returns its own [N,N] matrix (for per-image scores)."""
        image = self.count(gt, pred, ignore_index)
        self.matrix += image
        return image


@dataclass
class Scores:
    """Metrics of a confusion matrix. Per-class arrays are [N] float64, NaN where undefined.

    Attributes:
        iou: intersection over union per class (NaN if the class is neither in the ground truth
            nor predicted).
        accuracy: recall per class (NaN if absent from the ground truth).
        gt_pixels: [N] int64 ground-truth pixels per class.
        pred_pixels: [N] int64 predicted pixels per class (on non-ignored pixels).
        miou: mean IoU over the classes present in the ground truth.
        fwiou: frequency-weighted IoU.
        pixel_accuracy: correct pixels / all counted pixels.
        mean_accuracy: mean per-class accuracy over the classes present in the ground truth.
    """

    iou: np.ndarray
    accuracy: np.ndarray
    gt_pixels: np.ndarray
    pred_pixels: np.ndarray
    miou: float
    fwiou: float
    pixel_accuracy: float
    mean_accuracy: float

    @property
    def present(self) -> np.ndarray:
        """[N] bool: classes with ground-truth pixels."""
        return self.gt_pixels > 0

    def summary(self) -> dict[str, float | int | None]:
        return {
            "miou": _finite(self.miou),
            "fwiou": _finite(self.fwiou),
            "pixel_accuracy": _finite(self.pixel_accuracy),
            "mean_accuracy": _finite(self.mean_accuracy),
            "classes_present": int(self.present.sum()),
            "pixels": int(self.gt_pixels.sum()),
        }


def _finite(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def scores(matrix: np.ndarray) -> Scores:
    """All metrics of an [N,N] confusion matrix (rows ground truth). NaN where nothing was counted."""
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix).astype(np.float64)
    gt = matrix.sum(axis=1)
    pred = matrix.sum(axis=0)
    iou = _ratio(tp, (gt + pred).astype(np.float64) - tp)
    accuracy = _ratio(tp, gt.astype(np.float64))
    present = gt > 0
    total = gt.sum()
    if not present.any():
        return Scores(iou, accuracy, gt, pred, np.nan, np.nan, np.nan, np.nan)
    return Scores(
        iou=iou,
        accuracy=accuracy,
        gt_pixels=gt,
        pred_pixels=pred,
        miou=float(iou[present].mean()),
        fwiou=float((gt[present] / total * iou[present]).sum()),
        pixel_accuracy=float(tp.sum() / total),
        mean_accuracy=float(accuracy[present].mean()),
    )


def confused_pairs(matrix: np.ndarray, count: int = 10) -> list[tuple[int, int, int]]:
    """The largest off-diagonal cells: (ground-truth class, predicted class, pixels), largest first."""
    off = np.asarray(matrix, dtype=np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = np.flatnonzero(off)
    order = flat[np.argsort(-off.ravel()[flat], kind="stable")][:count]
    n = off.shape[0]
    return [(int(i // n), int(i % n), int(off.ravel()[i])) for i in order]


def most_confused_classes(matrix: np.ndarray, count: int = 15) -> np.ndarray:
    """Ids of the classes involved in the most errors (missed plus wrongly predicted pixels), ascending.

    Classes without errors fill up the list (largest ground truth first) when fewer have errors.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    tp = np.diag(matrix)
    errors = (matrix.sum(axis=1) - tp) + (matrix.sum(axis=0) - tp)
    seen = matrix.sum(axis=1) + matrix.sum(axis=0)
    order = np.lexsort((-seen, -errors))  # errors first, then pixels seen
    chosen = [c for c in order if seen[c] > 0][:count]
    return np.sort(np.asarray(chosen, dtype=np.int64))


class RejectionStats:
    """How often category early rejection dropped a class that the ground truth contains.

    A class rejected before the last decoder stage scores 0, so its ground-truth pixels in that
    image are lost whatever the decoder does: the direct cost of CER.
    """

    def __init__(self, num_classes: int, stages: int = 3) -> None:
        self.present_images = np.zeros(num_classes, dtype=np.int64)
        self.rejected_images = np.zeros(num_classes, dtype=np.int64)
        self.rejected_pixels = np.zeros(num_classes, dtype=np.int64)
        self.rejected_at = np.zeros((stages, num_classes), dtype=np.int64)

    def update(self, gt_pixels: np.ndarray, kept: Sequence[np.ndarray]) -> np.ndarray:
        """Add one image.

        Args:
            gt_pixels: [N] ground-truth pixel count per class in this image.
            kept: the class ids that entered each decoder stage (`Segmentation.kept`).

        Returns:
            ids of the classes present in the ground truth but rejected early, ascending.
        """
        present = np.asarray(gt_pixels) > 0
        self.present_images += present
        alive = np.ones_like(present)
        for stage, ids in enumerate(kept):
            in_stage = np.zeros_like(present)
            in_stage[np.asarray(ids, dtype=np.int64)] = True
            dropped_here = present & alive & ~in_stage
            self.rejected_at[stage] += dropped_here
            alive &= in_stage
        rejected = present & ~alive
        self.rejected_images += rejected
        self.rejected_pixels += np.where(rejected, gt_pixels, 0)
        return np.flatnonzero(rejected)

    def per_class(self, names: Sequence[str]) -> list[dict]:
        """Classes rejected at least once while present, most often first."""
        rows = []
        for c in np.flatnonzero(self.rejected_images):
            rows.append({
                "id": int(c),
                "name": names[c],
                "present_images": int(self.present_images[c]),
                "rejected_images": int(self.rejected_images[c]),
                "rejection_rate": round(float(self.rejected_images[c] / self.present_images[c]), 6),
                "rejected_gt_pixels": int(self.rejected_pixels[c]),
                "rejected_at": {DECODERS[s]: int(self.rejected_at[s, c]) for s in range(len(self.rejected_at))},
            })
        rows.sort(key=lambda r: (-r["rejection_rate"], -r["rejected_gt_pixels"], r["id"]))
        return rows
