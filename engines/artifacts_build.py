"""`build_artifacts`: every stage of an artifacts folder as a cached TensorRT engine (what sed-build does).

For each stage: the profile plan, the graph to build from (`stage_build`), then the engine, unless
the cache already holds one built from the same graph, TensorRT, GPU, precision and plan. fp16
engines are built strongly typed from the float16 graph that `sed-export --precision fp16` made and
checked on the workstation, on TensorRT 10.x and 11.x alike, so the engine computes what was checked
and the target machine needs neither onnx nor ONNX Runtime. A stage whose fp16 graph missed its
tolerance at export is built in fp32, and the report says so; the text stage is always fp32 (the
embedding cache holds fp32 results). Artifacts exported without fp16 graphs still build: fp32 on any
TensorRT, fp16 with TensorRT 10.x's FP16 builder flag on a weakly typed network (normalisation,
reduction and softmax layers pinned to fp32); `fp16_mode="flag"` asks for that path explicitly.
int8 engines are built strongly typed from the symmetric Q/DQ graphs of `sed-export --precision
int8` (explicit quantization: scales in the graph, no INT8 flag, no calibrator on the device); the
stages the export kept fp32 build in fp32.
With `dla_core` (Orin, TensorRT 10.x) the static stages (the image encoder) are built for that DLA
core with GPU fallback, from the fp32 graph with the FP16 flag; the stages with a class axis stay on
the GPU (the DLA has no dynamic shapes). Engines and their sidecars are written atomically; stages
are built one at a time (Jetson's 8 GB of unified memory holds one build, not six).
"""

from __future__ import annotations

import gc
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sed_deploy.core.contract import TEXT_STAGE
from sed_deploy.core.errors import ConfigError
from sed_deploy.core.fileio import atomic_write, write_json
from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.progress import Steps
from sed_deploy.runtime.engine_cache import (
    ENGINES_DIR,
    EngineRecord,
    Environment,
    engine_key,
    engine_path,
    read_records,
    stale_reason,
)

from .engine_build import BuildSettings, build_engine_bytes, require_tensorrt, weak_fp16_supported
from .memory_plan import ProfileMemory, check_budget, stage_memory
from .profiles import DEFAULT_EDGES, ClassRange, class_buckets, default_max_classes, stage_plan

ENGINE_PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class BuildOptions:
    """What sed-build was asked to do."""

    folder: Path
    precision: str = "fp32"
    max_classes: int | None = None
    edges: tuple[int, ...] = DEFAULT_EDGES
    workspace_mb: int = 4096
    optimization_level: int | None = None
    timing_cache: Path | None = None
    fp16_mode: str = "graph"  # "graph": strongly typed from the export's fp16 graph; "flag": 10.x builder flag
    vocab_sizes: tuple[int, ...] = ()  # sizes of the vocabularies given with --vocab (they set --max-classes)
    memory_budget_mb: int | None = None
    dla_core: int | None = None
    stages: tuple[str, ...] = ()
    dry_run: bool = False
    force: bool = False
    quiet: bool = False


@dataclass(frozen=True)
class StageBuild:
    """How one stage's engine is built.

    Attributes:
        graph: the ONNX file, relative to the artifacts folder.
        graph_sha256: its sha256 (from the manifest).
        strongly_typed: the network takes its precision from the graph; no precision flags at all.
        fp16_flag: TensorRT 10.x's FP16 builder flag on a weakly typed fp32 graph.
        computes: what the engine computes in: "fp32" or "fp16".
        note: why, in words (printed by the build and by --dry-run).
        dla_core: the DLA core the engine is built for (GPU fallback), None: the GPU.
    """

    graph: str
    graph_sha256: str
    strongly_typed: bool
    fp16_flag: bool
    computes: str
    note: str
    dla_core: int | None = None

    @property
    def mode(self) -> str:
        if self.dla_core is not None:
            return f"DLA core {self.dla_core}, FP16 flag"
        return "strongly typed" if self.strongly_typed else "FP16 flag" if self.fp16_flag else "fp32"


@dataclass
class BuildReport:
    """What happened per stage."""

    plan: dict[str, list] = field(default_factory=dict)
    builds: dict[str, StageBuild] = field(default_factory=dict)
    records: dict[str, EngineRecord] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)
    classes: ClassRange | None = None
    memory: list[ProfileMemory] = field(default_factory=list)


def stage_build(spec: StageSpec, precision: str, fp16_mode: str = "graph",
                weak_fp16: bool | None = None, dla_core: int | None = None) -> StageBuild:
    """The graph and typing of one stage's engine.

    Args:
        spec: the stage.
        precision: the engine set asked for: "fp32", "fp16" or "int8" (the export's Q/DQ graphs).
        fp16_mode: "graph" (the export's fp16 graph, strongly typed) or "flag" (TensorRT 10.x's FP16
            builder flag on the fp32 graph).
        weak_fp16: whether the installed TensorRT has the FP16 builder flag (10.x: True, 11.x:
            False); None when unknown (a dry run without TensorRT).
        dla_core: build static stages for this DLA core (fp16 only; TensorRT 10.x).

    Raises:
        ConfigError: the build cannot be done with this TensorRT.
    """
    fp32 = StageBuild(spec.file, spec.sha256, False, False, "fp32", "fp32 graph")
    static = not any(t.dynamic_axes for t in spec.inputs)
    if dla_core is not None and static and spec.name != TEXT_STAGE:
        if precision != "fp16":
            raise ConfigError("--dla-core needs --precision fp16: the DLA runs fp16 (or int8) layers only")
        if weak_fp16 is False:
            raise ConfigError("--dla-core needs TensorRT 10.x: 11.0-11.3 have no DLA, and later 11.x DLA builds "
                              "are strongly typed, which sed-build does not make yet")
        return StageBuild(spec.file, spec.sha256, False, True, "fp16", f"DLA core {dla_core} with GPU fallback: "
                          "FP16 flag on the fp32 graph (TensorRT 10.x DLA builds are weakly typed)", dla_core)
    if precision == "fp32":
        return fp32
    if spec.name == TEXT_STAGE:
        return StageBuild(spec.file, spec.sha256, False, False, "fp32",
                          "the text stage stays fp32 (vocabulary embeddings are cached as fp32 results)")
    if precision == "int8":
        return _int8_build(spec)
    variant = spec.variants.get("fp16")
    if fp16_mode == "graph" and variant is not None:
        if variant.fallback:
            return StageBuild(spec.file, spec.sha256, False, False, "fp32", f"stays fp32: {variant.fallback}")
        return StageBuild(variant.file, variant.sha256, True, False, "fp16",
                          f"fp16 graph checked at export (max relative error {variant.check.get('max_rel', 0):.1e})")
    if weak_fp16 is False:
        if fp16_mode == "flag":
            raise ConfigError("--fp16-mode flag needs TensorRT 10.x (11.x has no precision flags); "
                              "use --fp16-mode graph")
        raise ConfigError(f"stage {spec.name} has no fp16 graph and this TensorRT builds fp16 only from one (11.x "
                          "has no FP16 flag): re-export with sed-export --precision fp16")
    why = "asked for" if fp16_mode == "flag" else "no fp16 graph in the artifacts (sed-export --precision fp16)"
    return StageBuild(spec.file, spec.sha256, False, True, "fp16",
                      f"TensorRT 10.x FP16 builder flag on the fp32 graph ({why}; needs TensorRT 10.x)")


def _int8_build(spec: StageSpec) -> StageBuild:
    """int8: the export's symmetric Q/DQ graph, strongly typed (explicit quantization: the scales are in
    the graph, so no INT8 flag and no calibrator); float layers stay fp32 as the graph says."""
    variant = spec.variants.get("int8")
    if variant is None:
        raise ConfigError(f"stage {spec.name} has no int8 graph: re-export with sed-export --precision int8 "
                          "--calib-images DIR")
    if variant.fallback:
        return StageBuild(spec.file, spec.sha256, False, False, "fp32", f"stays fp32: {variant.fallback}")
    return StageBuild(variant.file, variant.sha256, True, False, "int8",
                      f"int8 Q/DQ graph calibrated at export (max relative error {variant.check.get('max_rel', 0):.1e} "
                      "against fp32)")


def build_artifacts(options: BuildOptions, say=print) -> BuildReport:
    """Plan and build or reuse every requested stage's engine (`dry_run`: plan only, no TensorRT)."""
    if options.precision not in ENGINE_PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(ENGINE_PRECISIONS)}, got {options.precision!r}")
    folder = Path(options.folder)
    manifest = Manifest.load(folder)
    stages = options.stages or tuple(manifest.stages)
    unknown = [s for s in stages if s not in manifest.stages]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; expected some of {list(manifest.stages)}")
    weak_fp16 = None
    if not options.dry_run:
        require_tensorrt()
        weak_fp16 = weak_fp16_supported()
    classes = default_max_classes(manifest, options.vocab_sizes, options.max_classes)
    buckets = class_buckets(classes.max_classes, options.edges, top_opt=classes.vocabulary)
    report = BuildReport(plan={name: stage_plan(spec, buckets) for name, spec in manifest.stages.items()},
                         classes=classes)
    say(f"max classes {classes.max_classes}: {classes.reason}")
    for stage in stages:
        build = stage_build(manifest.stages[stage], options.precision, options.fp16_mode, weak_fp16, options.dla_core)
        report.builds[stage] = build
        say(f"{stage:<14} {build.computes} ({build.mode}): {build.note}")
    for stage, build in report.builds.items():
        precision = "fp32" if build.graph == manifest.stages[stage].file else options.precision
        manifest.verify_files(folder, (stage,), precision)
        report.memory += stage_memory(manifest.stages[stage], folder, build.graph, build.computes == "fp16",
                                      report.plan[stage])
    if options.memory_budget_mb is not None:
        check_budget(report.memory, options.memory_budget_mb)
    if options.dry_run:
        return report
    _build_all(manifest, folder, stages, options, report)
    return report


def timing_cache_path(folder: Path, environment: Environment) -> Path:
    """The default timing cache: ARTIFACTS/engines/timing.<TensorRT>-<GPU>.cache (one per TensorRT and GPU)."""
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", f"{environment.tensorrt}-{environment.gpu}")
    return Path(folder) / ENGINES_DIR / f"timing.{tag}.cache"


def _build_all(manifest: Manifest, folder: Path, stages: tuple[str, ...], options: BuildOptions,
               report: BuildReport) -> None:
    from sed_deploy.runtime.backends.tensorrt import current_environment

    environment = current_environment()
    cache_path = options.timing_cache or timing_cache_path(folder, environment)
    timing = cache_path.read_bytes() if cache_path.is_file() else b""
    existing = {(r.stage, r.key): r for r in read_records(folder)}
    steps = Steps(len(stages), "sed-build", enabled=not options.quiet)
    try:
        for stage in stages:
            spec, build = manifest.stages[stage], report.builds[stage]
            settings = BuildSettings(workspace_mb=options.workspace_mb, optimization_level=options.optimization_level,
                                     strongly_typed=build.strongly_typed, fp16_flag=build.fp16_flag,
                                     dla_core=build.dla_core)
            # the key covers the graph actually built, how it was typed and every builder setting
            key = engine_key(build.graph_sha256, environment, f"{options.precision}/{build.computes}/{build.mode}",
                             report.plan[stage], asdict(settings))
            cached = existing.get((stage, key))
            if cached is not None and not options.force and stale_reason(cached, manifest, environment, folder) is None:
                report.records[stage] = cached
                report.cached.append(stage)
                steps.write(f"{stage:<14} cached ({Path(cached.file).name})")
                steps.advance()
                continue
            steps.label(f"{stage}: building ({build.computes}, {build.mode})")
            if spec.plugins:
                from sed_deploy.kernels.trt_plugin import register_plugin

                register_plugin(require_aot=True)  # sed-export writes the node with aot=1
            start = time.perf_counter()
            engine, timing = build_engine_bytes(folder / build.graph, report.plan[stage], settings, timing, stage)
            path = engine_path(folder, stage, options.precision, key)
            with atomic_write(path) as f:
                f.write(engine)
            with atomic_write(cache_path) as f:
                f.write(timing)
            record = EngineRecord(
                stage=stage, precision=options.precision, key=key, graph_sha256=build.graph_sha256,
                environment=environment, plan=report.plan[stage], file=str(path.relative_to(folder)),
                plugins=list(spec.plugins), build_seconds=round(time.perf_counter() - start, 1),
                graph_file=build.graph, computes=build.computes, dla_core=build.dla_core, built_at=time.time(),
            )
            write_json(path.with_name(path.name + ".json"), record.to_dict())
            report.records[stage] = record
            steps.write(f"{stage:<14} built in {record.build_seconds:.0f} s ({build.computes}, {build.mode}, "
                        f"{len(record.plan) or 1} profile(s), {path.stat().st_size >> 20} MB)")
            del engine
            gc.collect()  # one build's memory at a time
            steps.advance()
    finally:
        steps.close()
