"""Where a stage's time goes, per operator type, in ONNX Runtime's and OpenVINO's own profilers.

    python -m sed_deploy.benchmarks.studies.stage_profile --artifacts artifacts/B \
        [--stages image_encoder,cost,decoder1,decoder2,decoder3] [--vocabulary 459] [--kept 32] \
        [--engines ort,openvino] [--precision fp32|int8] [--threads N] [--runs 2] -o benchmarks/results/profile_B

Each stage graph is loaded as the runtime loads it (`session_options` for ONNX Runtime, the latency
compile settings for OpenVINO; int8 graphs in each runtime's rewritten form, `runtime.qdq`) and fed
random inputs at the class counts of a FORCED-keep run: the cost stage and decoder1's gathered axis
at `--vocabulary` classes, every kept axis at `--kept`. One untimed call, then `--runs` profiled
calls; per operator type the kernel time (ONNX Runtime: its `*_kernel_time` events; OpenVINO: the
`real_time` of each executed node, by node type and the kernel it chose) averaged over the runs.
Writes profile.json and profile.md (the five most expensive operator types per stage and engine).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import COST, DECODERS, IMAGE_STAGES
from sed_deploy.core.fileio import atomic_write, write_json
from sed_deploy.core.machine import machine_info
from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.onnxruntime import session_options
from sed_deploy.runtime.backends.openvino import compile_config, core
from sed_deploy.runtime.qdq import for_onnxruntime, for_openvino
from sed_deploy.runtime.stage_feeds import random_feeds

TOP = 5


def class_sizes(spec: StageSpec, vocabulary: int, kept: int) -> dict[str, int]:
    """The stage's dynamic axes at a FORCED-keep run: the first (gathered) axis of decoder1 and the
    cost stage's class axis hold the vocabulary, every other class axis the kept classes."""
    axes = sorted({a for t in spec.inputs for a in t.dynamic_axes.values()}, key=lambda a: (len(a), a))
    if not axes:
        return {}
    first = vocabulary if spec.name in (COST, DECODERS[0]) else kept
    return {axes[0]: first, **{a: kept for a in axes[1:]}}


def profile_ort(spec: StageSpec, path: Path, int8: bool, feeds: dict, runs: int, threads: int | None) -> dict:
    ort = require("onnxruntime", "profiling on ONNX Runtime")
    options = session_options(spec, threads)
    options.enable_profiling = True
    with tempfile.TemporaryDirectory() as tmp:
        options.profile_file_prefix = os.path.join(tmp, "ort")
        graph = for_onnxruntime(path) if int8 else str(path)
        session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)
        walls = []
        for _ in range(runs):
            start = time.perf_counter()
            session.run(None, feeds)
            walls.append(time.perf_counter() - start)
        events = json.loads(Path(session.end_profiling()).read_text())
    starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
    first_timed = starts[-runs]
    by_type: dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed:
            by_type[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return {"wall_ms": [round(1e3 * w, 1) for w in walls], "by_type_ms": dict(by_type)}


def profile_openvino(path: Path, int8: bool, feeds: dict, runs: int, threads: int | None) -> dict:
    model = core().read_model(model=for_openvino(path), weights=b"") if int8 else core().read_model(str(path))
    compiled = core().compile_model(model, "CPU", {**compile_config(None, threads), "PERF_COUNT": True})
    request = compiled.create_infer_request()
    request.infer(feeds)
    walls, by_type = [], defaultdict(float)
    for _ in range(runs):
        start = time.perf_counter()
        request.infer(feeds)
        walls.append(time.perf_counter() - start)
        for node in request.profiling_info:
            ms = node.real_time.total_seconds() * 1e3
            if ms > 0:
                by_type[f"{node.node_type} [{node.exec_type}]"] += ms / runs
    return {"wall_ms": [round(1e3 * w, 1) for w in walls], "by_type_ms": dict(by_type)}


def summarize(result: dict) -> dict:
    total = sum(result["by_type_ms"].values())
    ranked = sorted(result["by_type_ms"].items(), key=lambda kv: -kv[1])
    return {"wall_ms": result["wall_ms"], "kernel_ms": round(total, 1),
            "by_type": [{"op": op, "ms": round(ms, 1), "share": round(ms / total, 4) if total else 0.0}
                        for op, ms in ranked]}


def render(report: dict) -> str:
    lines = [f"# Per-operator profile: {report['artifacts']}, {report['precision']}",
             "",
             f"Machine: {report['machine']['cpu']}, {report['machine']['usable_cpus']} usable CPU threads; "
             f"{report['machine']['date']}.",
             "",
             f"Command: `{report['command']}`",
             "",
             f"Random inputs; cost and decoder1's gathered axis at {report['vocabulary']} classes, kept axes at "
             f"{report['kept']} (a FORCED keep run). Kernel time per operator type, mean of "
             f"{report['runs']} profiled calls after one untimed call; wall = the profiled calls' wall times "
             "(profiling adds a little).",
             "",
             "| stage | engine | wall ms | kernel ms | most expensive operator types (share of kernel time) |",
             "|---|---|---|---|---|"]
    for row in report["rows"]:
        top = ", ".join(f"{t['op']} {100 * t['share']:.0f}%" for t in row["by_type"][:TOP])
        wall = " / ".join(f"{w:,.0f}" for w in row["wall_ms"])
        lines.append(f"| {row['stage']} | {row['engine']} | {wall} | {row['kernel_ms']:,.0f} | {top} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--stages", default=",".join(IMAGE_STAGES))
    parser.add_argument("--vocabulary", type=int, default=459, help="classes of the vocabulary (default 459)")
    parser.add_argument("--kept", type=int, default=32, help="classes kept per pruned stage (default 32)")
    parser.add_argument("--engines", default="ort,openvino")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    manifest = Manifest.load(args.artifacts)
    rng = np.random.default_rng(0)
    rows = []
    for stage in args.stages.split(","):
        spec = manifest.stages[stage]
        variant = spec.variants.get(args.precision) if args.precision != "fp32" else None
        int8 = variant is not None and not variant.fallback
        path = args.artifacts / (variant.file if int8 else spec.file)
        feeds = random_feeds(spec, class_sizes(spec, args.vocabulary, args.kept), rng)
        for engine in args.engines.split(","):
            if engine == "ort":
                result = profile_ort(spec, path, int8, feeds, args.runs, args.threads)
            else:
                result = profile_openvino(path, int8, feeds, args.runs, args.threads)
            rows.append({"stage": stage, "engine": engine, "graph": path.name, **summarize(result)})
            print(f"{stage} {engine}: {rows[-1]['wall_ms']} ms; "
                  + ", ".join(f"{t['op']} {100 * t['share']:.0f}%" for t in rows[-1]["by_type"][:TOP]))
    report = {"artifacts": str(args.artifacts), "precision": args.precision, "vocabulary": args.vocabulary,
              "kept": args.kept, "runs": args.runs, "machine": machine_info(),
              "command": "python -m sed_deploy.benchmarks.studies.stage_profile " + " ".join(argv or []),
              "rows": rows}
    args.output.mkdir(parents=True, exist_ok=True)
    write_json(args.output / "profile.json", report)
    with atomic_write(args.output / "profile.md", "w") as f:
        f.write(render(report))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
