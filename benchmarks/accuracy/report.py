"""The report of an evaluation: `report.json` (everything), `report.md` (for people) and pictures.

`report.md` shows the summary metrics, the per-class table sorted by IoU, the most confused pairs,
the cost of category early rejection per class, the noise study table when there is one, and the
problems found in the dataset. The pictures (`eval_figures`) are the confusion matrix of the most
confused classes and side-by-side panels of the best and worst images.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.fileio import atomic_write, write_json

from .figures import write_figures
from .metrics import Scores, confused_pairs, scores
from .precisions import is_precision, precision_rows, precision_section
from .run import Evaluation

PROBLEM_LINES_SHOWN = 20


def _pct(value: float | None) -> str:
    return "-" if value is None or not np.isfinite(value) else f"{100 * value:.1f}"


def _num(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def class_rows(result: Scores, names: list[str]) -> list[dict]:
    """One row per class, in id order."""
    return [{"id": c, "name": names[c], "iou": _num(result.iou[c]), "accuracy": _num(result.accuracy[c]),
             "gt_pixels": int(result.gt_pixels[c]), "pred_pixels": int(result.pred_pixels[c]),
             "present": bool(result.gt_pixels[c] > 0)} for c in range(len(names))]


def timing_summary(images: list[dict]) -> dict:
    """Per-image milliseconds: mean of every step, and percentiles of the total."""
    steps = sorted({k for record in images for k in record["timings_ms"]})
    out = {k: {"mean": round(float(np.mean([r["timings_ms"].get(k, 0.0) for r in images])), 3)} for k in steps}
    if "total" in out:
        totals = np.array([r["timings_ms"]["total"] for r in images])
        out["total"].update({f"p{q}": round(float(np.percentile(totals, q)), 3) for q in (50, 90, 99)})
        out["total"]["max"] = round(float(totals.max()), 3)
    return out


def cer_summary(evaluation: Evaluation, config: dict) -> dict:
    kept = {stage: round(float(np.mean([len(r["kept"][stage]) for r in evaluation.images])), 3)
            for stage in DECODERS}
    return {
        "enabled": bool(config.get("cer", True)),
        "topk": config.get("topk"),
        "kept_mean": kept,
        "images_with_present_class_rejected": sum(bool(r["rejected_present"]) for r in evaluation.images),
        "classes": evaluation.rejection.per_class(evaluation.names),
    }


def noise_rows(evaluation: Evaluation, clean_miou: float) -> list[dict]:
    rows = []
    for variant, tally in zip(evaluation.variants, evaluation.tallies, strict=True):
        if is_precision(variant.info):
            continue
        miou = scores(tally.confusion.matrix).miou
        rows.append({"label": variant.label, **variant.info, "label_agreement": _num(tally.agreement),
                     "miou": _num(miou), "miou_change": _num(miou - clean_miou)})
    return rows


def build_report(evaluation: Evaluation, config: dict) -> dict:
    """The content of report.json."""
    result = scores(evaluation.confusion.matrix)
    names = evaluation.names
    kinds = Counter(p.kind for p in evaluation.problems)
    return {
        "config": config,
        "dataset": {"evaluated": len(evaluation.images), "problems": dict(kinds),
                    "problem_lines": [str(p) for p in evaluation.problems]},
        "metrics": result.summary(),
        "classes": class_rows(result, names),
        "confused_pairs": [{"gt": g, "gt_name": names[g], "pred": p, "pred_name": names[p], "pixels": n,
                            "share_of_gt": _num(n / result.gt_pixels[g])}
                           for g, p, n in confused_pairs(evaluation.confusion.matrix)],
        "cer": cer_summary(evaluation, config),
        "timings_ms": timing_summary(evaluation.images),
        "vocab_noise": noise_rows(evaluation, result.miou),
        "precisions": precision_rows(evaluation, result, config.get("precision") or "fp32"),
        "images": evaluation.images,
    }


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]


def _class_table(report: dict) -> list[str]:
    present = sorted((r for r in report["classes"] if r["present"]), key=lambda r: (-(r["iou"] or 0), r["id"]))
    rows = [[r["id"], r["name"], _pct(r["iou"]), _pct(r["accuracy"]), r["gt_pixels"], r["pred_pixels"]]
            for r in present]
    lines = ["## Classes (present in the ground truth, by IoU)", "",
             *_table(["id", "class", "IoU %", "acc %", "gt pixels", "predicted pixels"], rows)]
    only_predicted = [r for r in report["classes"] if not r["present"] and r["pred_pixels"]]
    if only_predicted:
        lines += ["", "Predicted but absent from the ground truth (not in mIoU): "
                  + ", ".join(f"{r['name']} ({r['pred_pixels']} px)" for r in only_predicted[:30])]
    absent = sum(not r["present"] and not r["pred_pixels"] for r in report["classes"])
    if absent:
        lines += ["", f"{absent} class(es) neither present nor predicted."]
    return lines


def _cer_section(cer: dict) -> list[str]:
    kept = ", ".join(f"{k} {v}" for k, v in cer["kept_mean"].items())
    if not cer["enabled"]:
        return ["## Category early rejection", "", f"Off (--no-cer): every class decoded ({kept} on average)."]
    lines = ["## Category early rejection", "",
             f"k = {cer['topk']}; classes kept on average: {kept}. A class present in the ground truth was "
             f"rejected early in {cer['images_with_present_class_rejected']} image(s)."]
    if cer["classes"]:
        rows = [[r["name"], r["present_images"], r["rejected_images"], _pct(r["rejection_rate"]),
                 r["rejected_gt_pixels"], ", ".join(f"{k}: {v}" for k, v in r["rejected_at"].items() if v)]
                for r in cer["classes"]]
        lines += ["", *_table(["class", "images present", "rejected", "rate %", "gt pixels lost",
                               "rejected before decoder"], rows)]
    return lines


def _noise_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    table = [[r["kind"], r["level"], "yes" if r["normalised"] else "no", r["names_changed_by_noise"],
              r["names_changed_by_normalisation"], r["names_equal_to_clean"], f"{r['cosine_mean']:.4f}",
              f"{r['cosine_min']:.4f}", _pct(r["label_agreement"]), _pct(r["miou"]),
              "-" if r["miou_change"] is None else f"{100 * r['miou_change']:+.1f}"] for r in rows]
    return ["## Noisy class names", "",
            "The vocabulary perturbed, as typed and after the runtime's normalisation, against the clean one on "
            "the same images: cosine similarity of the text embeddings (per class, averaged over the templates), "
            "agreement of the label maps, and mIoU.", "",
            *_table(["noise", "level", "normalised", "names noisy", "names repaired", "names = clean",
                     "cosine mean", "cosine min", "agreement %", "mIoU %", "Δ mIoU"], table)]


def _problem_section(dataset: dict) -> list[str]:
    if not dataset["problems"]:
        return []
    counts = ", ".join(f"{k}: {v}" for k, v in sorted(dataset["problems"].items()))
    lines = ["## Problems in the dataset", "", counts, "", "```"]
    lines += dataset["problem_lines"][:PROBLEM_LINES_SHOWN]
    if len(dataset["problem_lines"]) > PROBLEM_LINES_SHOWN:
        lines.append(f"... {len(dataset['problem_lines']) - PROBLEM_LINES_SHOWN} more in report.json")
    return [*lines, "```"]


def render_markdown(report: dict, figures: dict[str, list[str]]) -> str:
    c, m = report["config"], report["metrics"]
    lines = ["# sed-eval report", ""]
    lines += [f"- {k}: {v}" for k, v in c.items() if v is not None and k != "vocabulary_names"]
    if c.get("weights") == "random":
        lines += ["", "**These artifacts have random weights: the numbers measure the machinery, not SED.**"]
    lines += ["", *_table(["images", "mIoU %", "fwIoU %", "pixel acc %", "mean acc %", "classes present"],
                          [[report["dataset"]["evaluated"], _pct(m["miou"]), _pct(m["fwiou"]),
                            _pct(m["pixel_accuracy"]), _pct(m["mean_accuracy"]), m["classes_present"]]])]
    total = report["timings_ms"].get("total")
    if total:
        lines += ["", f"Per image: {total['mean']:.1f} ms mean, p50 {total['p50']:.1f}, p90 {total['p90']:.1f}."]
    lines += ["", *_class_table(report)]
    if report["confused_pairs"]:
        rows = [[p["gt_name"], p["pred_name"], p["pixels"], _pct(p["share_of_gt"])] for p in report["confused_pairs"]]
        lines += ["", "## Most confused pairs", "", *_table(["ground truth", "predicted as", "pixels",
                                                             "% of the class"], rows)]
    lines += ["", *_cer_section(report["cer"])]
    compared = precision_section(report.get("precisions"))
    lines += ["", *compared] if compared else []
    noise = _noise_section(report["vocab_noise"])
    lines += ["", *noise] if noise else []
    if figures:
        lines += ["", "## Pictures", ""]
        lines += [f"![{name}]({name})" for group in figures.values() for name in group]
    problems = _problem_section(report["dataset"])
    lines += ["", *problems] if problems else []
    return "\n".join(lines) + "\n"


def _remove_old_pictures(out: Path) -> None:
    """Pictures listed by an earlier report in the same folder (panels of other images would linger)."""
    try:
        old = json.loads((out / "report.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    for group in ("confusion", "best", "worst"):
        for name in old.get(group, []) if isinstance(old, dict) else []:
            if isinstance(name, str) and Path(name).name == name and name.endswith(".png"):
                (out / name).unlink(missing_ok=True)


def write_report(evaluation: Evaluation, config: dict, out: str | Path, figures: bool = True) -> dict:
    """Write report.json, report.md, confusion.npy and the PNGs into `out`; returns the report."""
    out = Path(out)
    report = build_report(evaluation, config)
    _remove_old_pictures(out)
    pictures = write_figures(evaluation, out) if figures else {}
    report["files"] = {"markdown": "report.md", "confusion": "confusion.npy", **pictures}
    with atomic_write(out / "confusion.npy") as f:
        np.save(f, evaluation.confusion.matrix)
    write_json(out / "report.json", report)
    with atomic_write(out / "report.md", "w") as f:
        f.write(render_markdown(report, pictures))
    return report
