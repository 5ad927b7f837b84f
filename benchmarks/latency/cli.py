"""`sed-bench`: latency of the staged pipeline per stage and end to end, CER on and off, backends side by side."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, add_common_args, run
from sed_deploy.core.errors import MissingDependencyError
from sed_deploy.runtime.pipeline_args import add_pipeline_args, options_per_backend

from .markdown import render_markdown
from .plots import write_plots
from .report import build_report, write_report
from .runner import BenchOptions, run_benchmark

EPILOG = """\
examples:
  sed-bench --artifacts artifacts/B -o out/bench
  sed-bench --artifacts artifacts/B --vocab pc459 --backends ort,torch --topk 4,8,16 --keep 32 \\
      --warmup 1 --iters 3 -o benchmarks/results/B_cpu
  sed-bench --artifacts artifacts/B --no-cer --backends ort --iters 5 -o out/cer_off

Settings per backend: CER off (unless --no-baseline), CER on for each --topk (unless --no-cer), and
with --keep N a FORCED row per k where every pruned stage keeps the N best classes (what trained
weights would prune to; random weights keep nearly every class). Each backend runs in its own
process (--no-isolate: in this one); a backend that is not installed or cannot serve the artifacts
is reported as skipped with the reason, a setting that runs out of memory as failed.

Writes report.json (schema sed-bench/1, see benchmarks/README.md), report.md, latency_stages.png
and latency_vs_classes.png into the output folder.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sed-bench", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", required=True, type=Path, help="folder written by sed-export")
    parser.add_argument("--vocab", default="pc459", help="class names: a file, a known name or an inline list "
                        "(default pc459)")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="the CER-off row (default on)")
    parser.add_argument("--keep", type=int, help="also FORCED rows: every pruned stage keeps the N best classes")
    parser.add_argument("--images", nargs="+", default=(), metavar="IMAGE",
                        help="images to cycle over (default: one synthetic 640x480 picture)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls per setting (default 3)")
    parser.add_argument("--iters", type=int, default=20, help="timed calls per setting (default 20)")
    parser.add_argument("--cache-dir", help="where new vocabulary embeddings are cached")
    parser.add_argument("--text-classes", type=int, default=20,
                        help="classes of the vocabulary encoded without cache to time the text stage (default 20; 0: "
                             "skip)")
    parser.add_argument("--memory-limit", type=float, metavar="MIB",
                        help="address-space cap per backend process in MiB (default 90%% of the memory available; 0: "
                             "none)")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                        help="one process per backend (default on)")
    parser.add_argument("--plots", action=argparse.BooleanOptionalAction, default=True, help="PNG plots (default on)")
    parser.add_argument("-o", "--output", required=True, type=Path, help="report folder")
    add_pipeline_args(parser, several=True)
    add_common_args(parser)
    return parser


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        artifacts=args.artifacts, vocab=args.vocab, backends=args.backends, precisions=args.precision,
        topks=args.topk, cer=args.cer,
        baseline=args.baseline, keep=args.keep, images=tuple(args.images), warmup=args.warmup, iters=args.iters,
        threads=args.threads, backend_options=options_per_backend(args), cache_dir=args.cache_dir,
        text_classes=args.text_classes, memory_limit_mb=args.memory_limit, isolate=args.isolate, quiet=args.quiet,
        max_pixels=args.max_pixels)


def bench(options: BenchOptions, output: Path, plots: bool = True) -> list[Path]:
    """Measure, then write report.json, report.md and the plots into `output`; returns the paths."""
    report = build_report(run_benchmark(options))
    written = write_report(report, output, render_markdown(report))
    if plots:
        try:
            written += write_plots(report, output)
        except MissingDependencyError as exc:
            print(f"WARNING: no plots: {exc}", file=sys.stderr)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.warmup < 0 or args.iters < 1:
        parser.error(f"--warmup must be >= 0 and --iters >= 1, got {args.warmup} and {args.iters}")
    if not args.backends:
        parser.error("--backends names no backend")

    def job():
        for path in bench(options_from_args(args), args.output, args.plots):
            print(f"wrote {path}")

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
