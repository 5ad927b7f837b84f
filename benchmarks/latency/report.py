"""sed-bench's report: `report.json` (schema `sed-bench/1`, documented in benchmarks/README.md) and `report.md`.

`build_report(raw)` turns the raw measurements of `bench.run_benchmark` into the report: per run
(backend x setting) latency summaries per stage and end to end, classes alive, work and achieved
GFLOP/s, host overhead, memory; then the comparisons the issue asks for (CER speed-up with the
forced keep next to the paper's, ONNX Runtime against PyTorch) and notes. `render_markdown` makes
the table a person reads; `write_report` writes both files atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sed_deploy.core.contract import COST, IMAGE_ENCODER, IMAGE_STAGES
from sed_deploy.core.fileio import atomic_write, write_json

from .measure import summarize_ms
from .multiply_adds import gflops
from .precision_errors import NOTE as PRECISION_NOTE

SCHEMA = "sed-bench/1"
# SED paper (CVPR 2024), SED-B on PC-459 at 768x768 on an NVIDIA RTX A6000: CER off and on.
PAPER = {"gpu": "NVIDIA RTX A6000", "cer_off_ms": 468.1, "cer_on_ms": 120.1, "speedup": 3.9,
         "source": "Xie et al., SED, CVPR 2024 (category early rejection)"}
TARGETS = {"ort_over_torch": 1.3, "host_overhead_share": 0.02}
OVERHEAD_PARTS = {"preprocess": "preprocess", "between_stages": "host", "postprocess": "postprocess"}


def _median(values) -> float:
    return float(np.median(values))


def summarize_run(result: dict, work: dict | None, peak_gflops: float) -> dict:
    """One backend x setting: per stage and end to end summaries, classes, work, overhead, memory."""
    samples = {k: np.asarray(v, dtype=np.float64) for k, v in result["samples"].items()}
    stage_sum = sum(samples[s] for s in IMAGE_STAGES)
    overhead = samples["total"] - stage_sum
    classes = {s: float(np.mean(v)) for s, v in result["classes"].items()}
    stages = {}
    for stage in IMAGE_STAGES:
        entry = {"ms": summarize_ms(samples[stage]), "classes": classes.get(stage)}
        if work is not None:
            macs = work[stage]["fixed_macs"] + work[stage]["macs_per_class"] * (classes.get(stage) or 0.0)
            rate = gflops(macs, float(samples[stage].mean()))
            entry.update(gmacs=round(macs / 1e9, 3), gflops=round(rate, 2),
                         peak_fraction=round(rate / peak_gflops, 4) if peak_gflops else None)
        stages[stage] = entry
    total = summarize_ms(samples["total"])
    overhead_ms = summarize_ms(overhead)
    return {
        "backend": result["backend"],
        "setting": result["setting"],
        "iterations": result["iterations"],
        "classes": classes,
        "stages": stages,
        "end_to_end": {"ms": total, "images_per_second": round(1000.0 / total["median"], 4)},
        "host_overhead": {
            "ms": overhead_ms,
            "share": round(overhead_ms["median"] / total["median"], 5),
            "parts_median_ms": {name: round(1000 * _median(samples[key]), 3) for name, key in OVERHEAD_PARTS.items()},
        },
        "memory": {"peak_rss_mb": result["peak_rss_mb"], "rss_scope": result["rss_scope"],
                   "device_memory_mb": result["device_memory_mb"]},
        "samples_ms": {k: [round(1000 * x, 3) for x in v] for k, v in result["samples"].items()},
    }


def _find(runs: list[dict], backend: str, key: str) -> dict | None:
    return next((r for r in runs if r["backend"] == backend and r["setting"]["key"] == key), None)


def cer_speedups(runs: list[dict], work: dict | None) -> list[dict]:
    """CER off against each CER-on row, per backend, with the ceiling of this machine.

    The ceiling is what CER could give if the decoders cost nothing: end to end with CER off over the
    image encoder + cost stages with CER off (the work CER cannot prune); `work_ceiling` is the same
    ratio in multiply-adds.
    """
    rows = []
    for off in (r for r in runs if not r["setting"]["cer"]):
        total = off["end_to_end"]["ms"]["median"]
        fixed = sum(off["stages"][s]["ms"]["median"] for s in (IMAGE_ENCODER, COST))
        work_ceiling = None
        if work is not None:
            macs = {s: off["stages"][s]["gmacs"] for s in IMAGE_STAGES}
            work_ceiling = round(sum(macs.values()) / (macs[IMAGE_ENCODER] + macs[COST]), 3)
        for on in (r for r in runs if r["backend"] == off["backend"] and r["setting"]["cer"]):
            on_ms = on["end_to_end"]["ms"]["median"]
            rows.append({"backend": off["backend"], "setting": on["setting"], "cer_off_ms": total, "cer_on_ms": on_ms,
                         "speedup": round(total / on_ms, 3), "ceiling": round(total / fixed, 3),
                         "unprunable_share": round(fixed / total, 4), "work_ceiling": work_ceiling})
    return rows


def _fp32_label(runs: list[dict], backend: str) -> str:
    """The report label of `backend`'s fp32 row: "ort", or "ort fp32" when precisions were listed."""
    labels = {r["backend"] for r in runs}
    return backend if backend in labels or f"{backend} fp32" not in labels else f"{backend} fp32"


def backend_ratios(runs: list[dict], slow: str = "torch", fast: str = "ort") -> list[dict]:
    """`slow` over `fast` median latency per setting, end to end and per stage (>1: `fast` is faster).

    A plain backend name stands for its fp32 row; "openvino bf16" names that row itself.
    """
    rows = []
    slow, fast = _fp32_label(runs, slow), _fp32_label(runs, fast)
    for a in (r for r in runs if r["backend"] == fast):
        b = _find(runs, slow, a["setting"]["key"])
        if b is None:
            continue
        per_stage = {s: round(b["stages"][s]["ms"]["median"] / a["stages"][s]["ms"]["median"], 3) for s in IMAGE_STAGES}
        rows.append({"setting": a["setting"], "fast": fast, "slow": slow,
                     "end_to_end": round(b["end_to_end"]["ms"]["median"] / a["end_to_end"]["ms"]["median"], 3),
                     "stages": per_stage})
    return rows


def report_notes(raw: dict, report: dict) -> list[str]:
    notes = []
    if report["artifacts"]["weights"].get("weights") == "random":
        notes.append("RANDOM weights: the masks are meaningless, and with random weights the aux heads keep nearly "
                     "every class, so real CER (rows without FORCED) prunes little. Rows marked FORCED keep exactly "
                     "N classes per pruned stage to measure what trained weights would give (the paper's model keeps "
                     "a few tens of classes on PC-459).")
    if any(s.forced for s in raw["settings"]):
        notes.append("FORCED keep N ranks each stage's classes from its top-K index maps (the graphs return no "
                     "scores): pixels where the class is among the first k, then its best rank over K, then its index.")
    opts = raw["options"]
    notes.append(f"Each row: {opts.warmup} warm-up then {opts.iters} timed calls of the whole pipeline (batch 1), "
                 f"cycling over the images; with n timed calls p90/p99 interpolate between the largest samples.")
    notes.append("Host overhead = end to end minus the five stage calls: pre-processing, top-k union and keep "
                 "formation between stages, post-processing. Stage times include the backend's own copies.")
    if raw["work"] is not None:
        notes.append("GFLOP/s = 2 x multiply-adds (Conv, ConvTranspose, MatMul, Gemm, Einsum, counted on the ONNX "
                     "graphs at the stage's class count) / mean stage time; peak = best float32 matmul in this run.")
    if report.get("precision_errors"):
        notes.append(PRECISION_NOTE)
    return notes


def combined_peak(raw: dict) -> dict:
    """The best matmul rate per library over the measurements of this run (sed-bench and each worker)."""
    measurements = [raw["matmul_peak"]] + [b["matmul_peak"] for b in raw["backends"].values() if b.get("matmul_peak")]
    rates: dict[str, float] = {}
    for measured in measurements:
        for library, rate in measured["rates"].items():
            rates[library] = max(rates.get(library, 0.0), rate)
    best = max(rates, key=rates.get) if rates else None
    return {"gflops": rates.get(best, 0.0), "library": best, "size": raw["matmul_peak"]["size"], "rates": rates}


def build_report(raw: dict) -> dict:
    """The `sed-bench/1` report of a run (see benchmarks/README.md for the schema)."""
    manifest, opts = raw["manifest"], raw["options"]
    matmul = combined_peak(raw)
    peak = matmul["gflops"]
    runs = [summarize_run(r, raw["work"], peak) for r in raw["results"]]
    order = {s.key: i for i, s in enumerate(raw["settings"])}
    backends = list(raw["backends"])
    runs.sort(key=lambda r: (backends.index(r["backend"]), order[r["setting"]["key"]]))
    report = {
        "schema": SCHEMA,
        "command": raw["machine"]["command"],
        "machine": raw["machine"],
        "artifacts": {
            "path": str(opts.artifacts), "backbone": manifest.backbone,
            "image_size": manifest.preprocessing.image_size, "weights": manifest.weights, "topk_K": manifest.topk,
            "precision": {name: spec.precision for name, spec in manifest.stages.items()},
            "precisions": list(manifest.precisions),
        },
        "vocabulary": {"source": opts.vocab, "classes": len(raw["names"])},
        "options": {"backends": list(opts.backends), "precisions": list(opts.precisions), "topks": list(opts.topks),
                    "cer": opts.cer,
                    "baseline": opts.baseline, "keep": opts.keep, "images": list(opts.images) or ["synthetic"],
                    "warmup": opts.warmup, "iters": opts.iters, "threads": opts.threads,
                    "backend_options": {b: o.specific() for b, o in opts.backend_options.items() if o.specific()},
                    "text_classes": opts.text_classes, "isolate": opts.isolate},
        "settings": [s.to_dict() for s in raw["settings"]],
        "matmul_peak": matmul,
        "work": raw["work"],
        "work_error": raw["work_error"],
        "backends": {n: {k: v for k, v in b.items() if k != "matmul_peak"} for n, b in raw["backends"].items()},
        "runs": runs,
        "failures": raw["failures"],
        "comparisons": {
            "cer_speedup": cer_speedups(runs, raw["work"]),
            "paper": PAPER,
            "ort_vs_torch": backend_ratios(runs),
            "openvino_vs_ort": [row for label in dict.fromkeys(r["backend"] for r in runs)
                                if label.split()[0] == "openvino" for row in backend_ratios(runs, "ort", label)],
            "targets": TARGETS,
            "max_host_overhead_share": max((r["host_overhead"]["share"] for r in runs), default=None),
        },
        "precision_errors": raw.get("precision_errors", []),
        "seconds": raw["seconds"],
    }
    report["notes"] = report_notes(raw, report)
    return report


def write_report(report: dict, folder: str | Path, markdown: str) -> list[Path]:
    """Write `report.json` and `report.md` into `folder`; returns their paths."""
    folder = Path(folder)
    write_json(folder / "report.json", report)
    with atomic_write(folder / "report.md", "w") as f:
        f.write(markdown)
    return [folder / "report.json", folder / "report.md"]
