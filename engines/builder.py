"""`build_artifacts`: every stage of an artifacts folder as a cached TensorRT engine (what sed-build does).

For each stage: the profile plan, for fp16 the float16 graph made and checked on the CPU (a stage
whose fp16 graph misses the tolerance stays fp32, and the report says so), then the engine, unless
the cache already holds one built from the same graph, TensorRT, GPU, precision and plan. fp16
engines are built strongly typed from that checked graph on TensorRT 10.x and 11.x alike, so the
engine computes what was checked; `fp16_mode="flag"` instead sets TensorRT 10.x's FP16 builder flag
on the fp32 graph (normalisation, reduction and softmax layers pinned to fp32). Engines
and their sidecars are written atomically; stages are built one at a time (Jetson's 8 GB of unified
memory holds one build, not six).
"""

from __future__ import annotations

import gc
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx

from sed_deploy.runtime.engine_cache import (
    ENGINES_DIR,
    EngineRecord,
    engine_key,
    engine_path,
    read_records,
    stale_reason,
)
from sed_deploy.runtime.errors import ConfigError
from sed_deploy.runtime.fileio import atomic_write, write_json
from sed_deploy.runtime.manifest import Manifest, file_sha256
from sed_deploy.runtime.progress import Steps

from .build import BuildSettings, build_engine_bytes, require_tensorrt, weak_fp16_supported
from .feeds import check_sizes, random_feeds
from .fp16 import FP16_TOLERANCE, check_fp16, convert_to_fp16
from .profiles import DEFAULT_EDGES, artifacts_plan

FP16_CHECK_COUNTS = (2, 17, 150)


@dataclass(frozen=True)
class BuildOptions:
    """What sed-build was asked to do."""

    folder: Path
    precision: str = "fp32"
    max_classes: int | None = None
    edges: tuple[int, ...] = DEFAULT_EDGES
    workspace_mb: int = 4096
    timing_cache: Path | None = None
    fp16_mode: str = "graph"  # "graph": strongly typed from the checked fp16 graph; "flag": 10.x builder flag
    stages: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    quiet: bool = False


@dataclass
class BuildReport:
    """What happened per stage."""

    plan: dict[str, list] = field(default_factory=dict)
    precision: dict[str, str] = field(default_factory=dict)
    fp16_checks: dict[str, dict] = field(default_factory=dict)
    records: dict[str, EngineRecord] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)


def build_artifacts(options: BuildOptions, say=print) -> BuildReport:
    """Plan, convert (fp16), and build or reuse every requested stage's engine."""
    if options.precision not in ("fp32", "fp16"):
        raise ConfigError(f"--precision must be fp32 or fp16, got {options.precision!r}")
    folder = Path(options.folder)
    manifest = Manifest.load(folder)
    manifest.verify_files(folder)
    stages = options.stages or tuple(manifest.stages)
    unknown = [s for s in stages if s not in manifest.stages]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {list(manifest.stages)}")
    report = BuildReport(plan=artifacts_plan(manifest, options.max_classes, options.edges))
    graphs = {s: folder / manifest.stages[s].file for s in stages}
    report.precision = dict.fromkeys(stages, options.precision)
    if options.precision == "fp16":
        for stage in stages:
            graphs[stage] = _fp16_graph(manifest, folder, stage, report, say)
    if options.dry_run:
        return report
    _build_all(manifest, folder, stages, graphs, options, report, say)
    return report


def _fp16_graph(manifest: Manifest, folder: Path, stage: str, report: BuildReport, say) -> Path:
    """Write ENGINES_DIR/<stage>.fp16.onnx, check it against the fp32 graph; fall back to fp32 if off."""
    spec = manifest.stages[stage]
    source = folder / spec.file
    target = folder / ENGINES_DIR / f"{stage}.fp16.onnx"
    converted = convert_to_fp16(onnx.load(str(source)))
    with atomic_write(target) as f:
        f.write(converted.SerializeToString())
    feeds = [random_feeds(spec, sizes, np.random.default_rng(i))
             for i, sizes in enumerate(check_sizes(spec, FP16_CHECK_COUNTS))]
    result = check_fp16(spec, source, target, feeds)
    report.fp16_checks[stage] = result
    if result["max_rel"] > FP16_TOLERANCE:
        report.precision[stage] = "fp32"
        say(f"{stage:<14} fp16 graph off by {result['max_rel']:.1e} (tolerance {FP16_TOLERANCE:.0e}): kept fp32")
        return source
    say(f"{stage:<14} fp16 graph checked on the CPU: max relative error {result['max_rel']:.1e}")
    return target


def _build_all(manifest: Manifest, folder: Path, stages: tuple[str, ...], graphs: dict[str, Path],
               options: BuildOptions, report: BuildReport, say) -> None:
    from sed_deploy.runtime.backends.tensorrt import current_environment

    require_tensorrt()
    if options.fp16_mode == "flag" and options.precision == "fp16" and not weak_fp16_supported():
        raise ConfigError("--fp16-mode flag needs TensorRT 10.x (11.x has no precision flags); use --fp16-mode graph")
    environment = current_environment()
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", f"{environment.tensorrt}-{environment.gpu}")
    cache_path = options.timing_cache or folder / ENGINES_DIR / f"timing.{tag}.cache"  # tied to TRT and GPU
    timing = cache_path.read_bytes() if cache_path.is_file() else b""
    existing = {(r.stage, r.key): r for r in read_records(folder)}
    steps = Steps(len(stages), "sed-build", enabled=not options.quiet)
    try:
        for stage in stages:
            spec = manifest.stages[stage]
            precision = report.precision[stage]
            strongly_typed = precision == "fp16" and options.fp16_mode == "graph"
            graph = graphs[stage] if strongly_typed else folder / spec.file
            # the key covers the graph actually built: an fp16 graph changes with the converter
            source = spec.sha256 if graph == folder / spec.file else f"{spec.sha256}+{file_sha256(graph)}"
            key = engine_key(source, environment, precision, report.plan[stage])
            cached = existing.get((stage, key))
            if cached is not None and not options.force and stale_reason(cached, manifest, environment, folder) is None:
                report.records[stage] = cached
                report.cached.append(stage)
                steps.write(f"{stage:<14} cached ({Path(cached.file).name})")
                steps.advance()
                continue
            steps.label(f"{stage}: building ({precision})")
            if spec.plugins:
                from sed_deploy.kernels.trt_plugin import register_plugin

                register_plugin()
            start = time.perf_counter()
            settings = BuildSettings(precision=precision, workspace_mb=options.workspace_mb)
            engine, timing = build_engine_bytes(graph, report.plan[stage], settings, timing, stage, strongly_typed)
            path = engine_path(folder, stage, precision, key)
            with atomic_write(path) as f:
                f.write(engine)
            with atomic_write(cache_path) as f:
                f.write(timing)
            record = EngineRecord(
                stage=stage, precision=precision, key=key, graph_sha256=spec.sha256, environment=environment,
                plan=report.plan[stage], file=str(path.relative_to(folder)), plugins=list(spec.plugins),
                build_seconds=round(time.perf_counter() - start, 1),
                graph_file=str(graph.relative_to(folder)),
            )
            write_json(path.with_name(path.name + ".json"), record.to_dict())
            report.records[stage] = record
            steps.write(f"{stage:<14} built in {record.build_seconds:.0f} s ({precision}, "
                        f"{len(record.plan) or 1} profile(s), {path.stat().st_size >> 20} MB)")
            del engine
            gc.collect()  # one build's memory at a time
            steps.advance()
    finally:
        steps.close()
