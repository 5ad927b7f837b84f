"""`report.md` of sed-bench: the latency table first (rows = backend x setting), then the comparisons.

Everything is read from the `sed-bench/1` report dict, so a report.json can be re-rendered later.
"""

from __future__ import annotations

from sed_deploy.core.contract import DECODERS, IMAGE_ENCODER, IMAGE_STAGES


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def machine_line(report: dict) -> str:
    m = report["machine"]
    v = m["versions"]
    gpus = ", ".join(g["name"] + (f" (driver {g['driver']})" if g.get("driver") else "") for g in m["gpus"]) or "none"
    libs = ", ".join(f"{k} {v[k]}" for k in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "numpy") if k in v)
    return (f"{m['cpu']}, {m['usable_cpus']} usable CPU threads; GPU: {gpus}; Python {m['python']}; {libs}; "
            f"matmul peak {report['matmul_peak']['gflops']:.0f} GFLOP/s (float32, {report['matmul_peak']['library']}); "
            f"{m['date']}")


def latency_table(report: dict) -> list[str]:
    header = ["backend", "setting", "classes d1/d2/d3", *IMAGE_STAGES, "host", "end to end", "p90", "p99",
              "img/s", "peak RSS MiB"]
    rows = []
    for r in report["runs"]:
        c = r["classes"]
        e2e = r["end_to_end"]["ms"]
        rows.append([
            r["backend"], r["setting"]["label"], "/".join(f"{c[d]:.0f}" for d in DECODERS),
            *[_ms(r["stages"][s]["ms"]["median"]) for s in IMAGE_STAGES],
            f"{_ms(r['host_overhead']['ms']['median'])} ({100 * r['host_overhead']['share']:.1f}%)",
            f"**{_ms(e2e['median'])}**", _ms(e2e["p90"]), _ms(e2e["p99"]),
            f"{r['end_to_end']['images_per_second']:.3f}", f"{r['memory']['peak_rss_mb']:,.0f}",
        ])
    return _table(header, rows)


def speedup_section(report: dict) -> list[str]:
    rows = []
    paper = report["comparisons"]["paper"]
    for s in report["comparisons"]["cer_speedup"]:
        if not s["setting"]["forced"]:
            continue
        work = f"{100 / s['work_ceiling']:.0f}%" if s["work_ceiling"] else "-"
        shares = f"{100 * s['unprunable_share']:.0f}% / {work}"
        rows.append([s["backend"], s["setting"]["label"], _ms(s["cer_off_ms"]), _ms(s["cer_on_ms"]),
                     f"**{s['speedup']:.2f}x**", f"{s['ceiling']:.2f}x", shares])
    if not rows:
        return []
    lines = ["## CER speed-up (forced keep)", "",
             f"Paper: {paper['speedup']}x ({paper['cer_off_ms']} ms -> {paper['cer_on_ms']} ms on an {paper['gpu']}). "
             "Ceiling here: CER off end to end over its image encoder + cost stages, the part CER cannot prune; "
             "their share of CER off is given in time and in multiply-adds.", ""]
    header = ["backend", "setting", "CER off ms", "CER on ms", "speed-up", "ceiling here", "unprunable: time / work"]
    return lines + _table(header, rows) + [""]


def ratio_section(report: dict) -> list[str]:
    rows = [[r["setting"]["label"], f"**{r['end_to_end']:.2f}x**", *[f"{r['stages'][s]:.2f}x" for s in IMAGE_STAGES]]
            for r in report["comparisons"]["ort_vs_torch"]]
    if not rows:
        return []
    target = report["comparisons"]["targets"]["ort_over_torch"]
    lines = ["## ONNX Runtime against PyTorch", "",
             f"torch median / ort median (> 1: ONNX Runtime is faster; target >= {target}x at CER k=8, forced keep).",
             ""]
    return lines + _table(["setting", "end to end", *IMAGE_STAGES], rows) + [""]


def openvino_section(report: dict) -> list[str]:
    rows = [[r["fast"], r["setting"]["label"], f"**{r['end_to_end']:.2f}x**",
             *[f"{r['stages'][s]:.2f}x" for s in IMAGE_STAGES]]
            for r in report["comparisons"].get("openvino_vs_ort", [])]
    if not rows:
        return []
    lines = ["## OpenVINO against ONNX Runtime fp32", "",
             "ort fp32 median / openvino median (> 1: OpenVINO is faster).", ""]
    return lines + _table(["row", "setting", "end to end", *IMAGE_STAGES], rows) + [""]


def overhead_section(report: dict) -> list[str]:
    rows = []
    for r in report["runs"]:
        h = r["host_overhead"]
        parts = h["parts_median_ms"]
        rows.append([r["backend"], r["setting"]["label"], _ms(parts["preprocess"]), _ms(parts["between_stages"]),
                     _ms(parts["postprocess"]), _ms(h["ms"]["median"]), f"{100 * h['share']:.2f}%"])
    if not rows:
        return []
    target = 100 * report["comparisons"]["targets"]["host_overhead_share"]
    lines = ["## Host overhead", "", f"Runtime work outside the stage calls, median ms (target: under {target:.0f}% "
             "of end to end).", ""]
    header = ["backend", "setting", "preprocess", "between stages", "postprocess", "total", "share"]
    return lines + _table(header, rows) + [""]


def precision_section(report: dict) -> list[str]:
    """Each reduced-precision row against the fp32 row of its backend (see precision_errors.py)."""
    rows = []
    labels = {s["key"]: s["label"] for s in report["settings"]}
    for e in report.get("precision_errors", []):
        if e.get("reason"):
            rows.append([e["backend"], e.get("reference") or "-", labels.get(e.get("setting"), "-"),
                         f"not compared: {e['reason']}", "", "", ""])
            continue
        agree, jac = e["label_agreement"], e["jaccard"]
        rows.append([e["backend"], e["reference"], labels.get(e["setting"], e["setting"]), str(e["images"]),
                     f"{e['max_relative_error']:.1e}", f"{100 * agree['mean']:.2f}% (worst {100 * agree['min']:.2f}%)",
                     " / ".join(f"{jac[s]['mean']:.3f}" for s in DECODERS)])
    if not rows:
        return []
    lines = ["## Reduced precision against fp32", "",
             "Same backend, same images: max relative error of the final scores (over the largest fp32 score), "
             "label-map agreement, mean Jaccard of the kept sets per decoder stage. On random weights near-ties make "
             "label agreement and Jaccard pessimistic.", ""]
    header = ["row", "against", "setting", "images", "max rel. error", "label agreement", "Jaccard d1/d2/d3"]
    return lines + _table(header, rows) + [""]


def work_section(report: dict) -> list[str]:
    if report["work"] is None:
        return ["## Work", "", f"Not counted: {report['work_error']}", ""]
    peak = report["matmul_peak"]["gflops"]
    rows = [[r["backend"], r["setting"]["label"],
             *[f"{r['stages'][s]['gflops']:.0f} ({100 * r['stages'][s]['peak_fraction']:.0f}%)" for s in IMAGE_STAGES]]
            for r in report["runs"]]
    per_class = ", ".join(f"{s} {report['work'][s]['macs_per_class'] / 1e9:.3f}" for s in IMAGE_STAGES[1:])
    lines = ["## Work: achieved GFLOP/s (share of the matmul peak)", "",
             f"Matmul peak {peak:.0f} GFLOP/s. Image encoder {report['work'][IMAGE_ENCODER]['fixed_macs'] / 1e9:.1f} "
             f"GMAC per image; GMAC per class alive: {per_class}.", ""]
    return lines + _table(["backend", "setting", *IMAGE_STAGES], rows) + [""]


def text_section(report: dict) -> list[str]:
    rows = []
    for name, b in report["backends"].items():
        t = b.get("text")
        if not t:
            continue
        if t["sample_seconds"] is not None:
            sample = f"{t['sample_seconds']:.1f} s for {t['sample_classes']} classes"
        else:  # no error: --text-classes 0 asked for no sample
            sample = f"failed: {t['sample_error']}" if t["sample_error"] else "not measured (--text-classes 0)"
        estimate = t.get("estimated_vocabulary_seconds")
        whole = (f"{t['vocabulary_seconds']:.1f} s (encoded now)" if t["vocabulary_source"] == "encoded"
                 else f"from cache ({t['vocabulary_seconds']:.2f} s)")
        rows.append([name, f"{t['load_seconds']:.1f} s", sample, f"{estimate:.0f} s" if estimate else "-", whole])
    if not rows:
        return []
    classes = report["vocabulary"]["classes"]
    return (["## Text encoding (one-time per vocabulary)", ""]
            + _table(["backend", "text stage load", "sample (no cache)", f"estimated for {classes} classes",
                      "this vocabulary"], rows) + [""])


def engines_section(report: dict) -> list[str]:
    """What ran each stage, per backend (which TensorRT engines, which graphs)."""
    lines = []
    for name, backend in report["backends"].items():
        engines = backend.get("engines") or {}
        if engines:
            lines.append(f"- {name}: " + "; ".join(f"{stage}: {what}" for stage, what in engines.items()))
    return (["## What ran each stage", "", *lines, ""]) if lines else []


def status_section(report: dict) -> list[str]:
    lines = [f"- {n}: {b['status']}: {b['reason']}" for n, b in report["backends"].items() if b["status"] != "ok"]
    lines += [f"- {f['backend']}, {f['setting']['label']}: failed: {f['reason']}" for f in report["failures"]]
    return (["## Skipped and failed", "", *lines, ""]) if lines else []


def render_markdown(report: dict) -> str:
    a, v = report["artifacts"], report["vocabulary"]
    weights = a["weights"].get("weights", "?")
    size = f"{a['image_size']}x{a['image_size']}"
    title = f"# sed-bench: SED-{a['backbone']} {size}, {v['source']} ({v['classes']} classes)"
    lines = [title, "", f"Machine: {machine_line(report)}", "", f"Command: `{report['command']}`", "",
             f"Weights: {weights.upper()}" + (" (see notes)" if weights == "random" else "") + ".", "",
             "Median milliseconds per stage; host = runtime overhead outside the stage calls (share of end to end).",
             "Rows marked FORCED keep a fixed number of classes per pruned stage.", ""]
    lines += latency_table(report) + [""]
    for section in (speedup_section, ratio_section, openvino_section, precision_section, overhead_section,
                    work_section, text_section, engines_section, status_section):
        lines += section(report)
    lines += ["## Notes", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)
