"""Precisions side by side (`sed-eval --compare-precision int8`): what a reduced precision costs in mIoU.

Each compared precision runs as one more `Variant` of the evaluation (same images, same vocabulary,
its own pipeline at that precision), so its confusion matrix and its pixel agreement with the
reference run come from the same pass. The report gets mIoU of each precision, the change, the
share of pixels labelled as the reference labels them, and IoU per class for each precision.
"""

from __future__ import annotations

import numpy as np

from .metrics import Scores, scores
from .run import Evaluation

KIND = "precision"


def is_precision(info: dict) -> bool:
    return info.get("kind") == KIND


def precision_info(precision: str) -> dict:
    """The `Variant.info` of a compared precision."""
    return {"kind": KIND, "precision": precision}


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def precision_rows(evaluation: Evaluation, reference: Scores, reference_label: str) -> dict | None:
    """{"reference", "runs": [{precision, miou, miou_change, label_agreement}], "classes": [...]}, or
    None when no precision was compared. Classes: those present in the ground truth, with the IoU of
    the reference and of each compared precision."""
    compared = [(v, t) for v, t in zip(evaluation.variants, evaluation.tallies, strict=True) if is_precision(v.info)]
    if not compared:
        return None
    results = [(v.info["precision"], scores(t.confusion.matrix), t) for v, t in compared]
    runs = [{"precision": p, "miou": _num(s.miou), "miou_change": _num(s.miou - reference.miou),
             "label_agreement": _num(t.agreement)} for p, s, t in results]
    classes = [{"id": c, "name": evaluation.names[c], reference_label: _num(reference.iou[c]),
                **{p: _num(s.iou[c]) for p, s, _ in results}}
               for c in range(len(evaluation.names)) if reference.gt_pixels[c] > 0]
    return {"reference": reference_label, "reference_miou": _num(reference.miou), "runs": runs, "classes": classes}


def precision_section(table: dict | None) -> list[str]:
    """The Markdown section of `precision_rows` (empty without one)."""
    if not table:
        return []

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    ref = table["reference"]
    header = ["precision", "mIoU %", "change (points)", "pixels labelled as " + ref]
    rows = [[ref, pct(table["reference_miou"]), "-", "-"]]
    rows += [[r["precision"], pct(r["miou"]), "-" if r["miou_change"] is None else f"{100 * r['miou_change']:+.2f}",
              pct(r["label_agreement"])] for r in table["runs"]]
    others = [r["precision"] for r in table["runs"]]
    class_rows = [[c["id"], c["name"], pct(c[ref]), *(pct(c[p]) for p in others)] for c in table["classes"]]
    lines = ["## Precisions side by side", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    cols = ["id", "class", f"IoU % {ref}", *(f"IoU % {p}" for p in others)]
    lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in class_rows]
    return lines
