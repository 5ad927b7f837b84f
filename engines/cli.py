"""`sed-build`: compile the stage graphs of an artifacts folder into TensorRT engines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, add_common_args, run
from sed_deploy.core.errors import SedDeployError
from sed_deploy.runtime.vocabulary import vocabulary_from_arg

from .artifacts_build import ENGINE_PRECISIONS, BuildOptions, build_artifacts
from .engine_build import EngineBuildError
from .memory_plan import describe_rows
from .profiles import parse_profiles

EPILOG = """\
examples:
  sed-build artifacts/B                          # fp32 engines for every stage, cached in artifacts/B/engines
  sed-build artifacts/B --precision fp16 --check # fp16 engines, then each compared with ONNX Runtime
  sed-build artifacts/B --precision int8          # int8 Q/DQ graphs of sed-export --precision int8
  sed-build artifacts/B --precision fp16 --dry-run   # no GPU or TensorRT needed: the plan, stage by stage

fp16 engines are built strongly typed from the fp16 graphs of `sed-export --precision fp16` (checked
against fp32 at export); artifacts without them build fp16 through TensorRT 10's FP16 flag.
  sed-build artifacts/B --workspace 1024 --stages image_encoder   # on a Jetson: small workspace, one stage

  sed-build artifacts/B --vocab pc459 --memory-budget 6000 --dry-run   # will 459 classes fit 6 GB?
  sed-build artifacts/B --precision fp16 --dla-core 0  # Orin: the image encoder on DLA core 0, GPU fallback

Engines are keyed by the graph's sha256, the TensorRT version, the GPU and its compute capability,
the precision and the profile plan; a matching engine is reused, a stale or foreign one is never used.
Profiles bucket the class axis (default 1-32, 33-128, 129-max; --profiles 16,64,256 to change).
max = --max-classes, else the largest vocabulary given with --vocab or embedded at export, else 256:
device memory grows with it (decoder3 holds megabytes per class), so build for what you will run.
--dry-run prints the estimated device memory of every stage and profile; --memory-budget refuses a
plan that does not fit.
"""


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="sed-build", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", type=Path, help="folder written by sed-export")
    parser.add_argument("--precision", choices=list(ENGINE_PRECISIONS), default="fp32",
                        help="engine precision (fp32); int8 builds the Q/DQ graphs of sed-export --precision int8 "
                             "strongly typed, with no precision flags")
    parser.add_argument("--fp16-mode", choices=["graph", "flag"], default="graph",
                        help="fp16 from the export's float16 graphs, strongly typed (default; TensorRT 10 and "
                             "11), or TensorRT 10's FP16 builder flag on the fp32 graphs")
    parser.add_argument("--optimization-level", type=int, choices=range(6), metavar="0-5",
                        help="TensorRT's builder optimisation level (default TensorRT's, 3): higher tries more "
                             "tactics for a faster engine and a longer build")
    parser.add_argument("--max-classes", type=int,
                        help="largest class count the engines accept (default: the largest vocabulary of --vocab "
                             "or embedded at export, else 256)")
    parser.add_argument("--vocab", nargs="+", default=(), metavar="VOCAB",
                        help="vocabularies the engines are for (files, known names like pc459, inline lists): "
                             "the largest sets --max-classes")
    parser.add_argument("--memory-budget", type=int, metavar="MB",
                        help="refuse a plan whose estimated device memory exceeds this (e.g. 6000 on an 8 GB Orin)")
    parser.add_argument("--dla-core", type=int, metavar="N",
                        help="Orin: build the static stages (the image encoder) for DLA core N with GPU fallback "
                             "(--precision fp16, TensorRT 10.x)")
    parser.add_argument("--profiles", default="auto", help="'auto' or bucket edges of the class axis, e.g. 32,128")
    parser.add_argument("--workspace", type=int, default=4096, metavar="MB", help="builder workspace limit (4096)")
    parser.add_argument("--timing-cache", type=Path,
                        help="timing cache file (default ARTIFACTS/engines/timing.<TensorRT>-<GPU>.cache)")
    parser.add_argument("--stages", nargs="+", default=(), help="build only these stages")
    parser.add_argument("--check", action="store_true", help="compare every engine with ONNX Runtime afterwards")
    parser.add_argument("--force", action="store_true", help="rebuild even if a matching engine is cached")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the profile plan and how each stage would be built, without TensorRT")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if args.workspace < 64:
        parser.error(f"--workspace must be at least 64 MB, got {args.workspace}")
    if args.max_classes is not None and args.max_classes < 1:
        parser.error(f"--max-classes must be at least 1, got {args.max_classes}")
    if args.memory_budget is not None and args.memory_budget < 1:
        parser.error(f"--memory-budget must be at least 1 MB, got {args.memory_budget}")
    if args.dla_core is not None and args.dla_core < 0:
        parser.error(f"--dla-core must be 0 or more, got {args.dla_core}")

    def job():
        vocab_sizes = tuple(len(vocabulary_from_arg(v)) for v in args.vocab)
        options = BuildOptions(
            folder=args.artifacts, precision=args.precision, max_classes=args.max_classes,
            edges=parse_profiles(args.profiles), workspace_mb=args.workspace, timing_cache=args.timing_cache,
            stages=tuple(args.stages), dry_run=args.dry_run, force=args.force, quiet=args.quiet,
            fp16_mode=args.fp16_mode, optimization_level=args.optimization_level, vocab_sizes=vocab_sizes,
            memory_budget_mb=args.memory_budget, dla_core=args.dla_core,
        )
        try:
            report = build_artifacts(options)
        except EngineBuildError as exc:
            for line in exc.details:
                print(f"  parser: {line}", file=sys.stderr)
            raise
        for stage in options.stages or tuple(report.plan):
            ranges = ", ".join(describe_profile(p) for p in report.plan[stage]) or "static shapes"
            print(f"{stage:<14} {report.builds[stage].computes}  profiles: {ranges}")
        for line in describe_rows(report.memory):
            print(line)
        if args.dry_run:
            print("dry run: no engines built")
            return
        if args.check:
            _run_checks(args.artifacts, report)

    return run(job, debug=args.debug)


def describe_profile(profile: dict) -> str:
    """"keep 1-32" style: the dynamic extents of the profile's first input."""
    name, (low, opt, high) = next(iter(profile.items()))
    dims = [f"{lo}-{hi} (opt {op})" for lo, op, hi in zip(low, opt, high, strict=True) if lo != hi]
    return f"{name} " + " x ".join(dims)


def _run_checks(folder: Path, report) -> None:
    from sed_deploy.core.manifest import Manifest

    from .engine_check import check_engine

    manifest = Manifest.load(folder)
    failed = []
    for stage, record in report.records.items():
        for result in check_engine(manifest, folder, record):
            worst = ", ".join(f"{n} {e:.1e}" for n, e in result["errors"].items())
            status = "ok" if result["passed"] else "FAILED"
            print(f"check {stage:<14} {result['sizes']}  {worst}  (tolerance {result['tolerance']:.0e}) {status}")
            if not result["passed"]:
                failed.append(stage)
    if failed:
        raise SedDeployError(f"--check failed for {sorted(set(failed))}: engines differ from ONNX Runtime")
