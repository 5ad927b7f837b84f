"""What every command-line tool shares: the pipeline options, the output options and the error boundary.

A tool's `main(argv=None) -> int` parses its arguments and calls one library function through
`run`: a `SedDeployError` becomes one line on stderr and exit code 1 (with the traceback only under
--debug); Ctrl-C exits 130. Any other exception is a bug and keeps its traceback.

`add_pipeline_args` declares how the stages run (backend, precision, top-k, CER, threads,
providers, device) once for every tool that runs a `Pipeline`, so a new backend or option appears in
all of them at once; `pipeline_options` turns the parsed arguments into `Pipeline.from_artifacts`
keyword arguments. Tools that compare several settings (sed-bench) take comma-separated lists.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any

from .backends import backend_names, canonical_name
from .backends.base import PRECISIONS
from .decode import DEFAULT_MAX_PIXELS
from .errors import SedDeployError


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: `prog: error: what was wrong (see prog --help)`, exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("output")
    group.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks of errors")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _choice_list(choices: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    def parse(text: str) -> tuple[str, ...]:
        values = _names(text)
        unknown = [v for v in values if v not in choices]
        if unknown or not values:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {', '.join(choices)}, got {text!r}")
        return values

    return parse


def _backend_list(text: str) -> tuple[str, ...]:
    """Comma-separated backend names, aliases allowed ("onnxruntime" is "ort")."""
    values = _names(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of backends, got {text!r}")
    try:
        return tuple(dict.fromkeys(canonical_name(v) for v in values))
    except SedDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_ints(text: str) -> tuple[int, ...]:
    values = tuple(_positive_int(part) for part in _names(text))
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 4,8,16, got {text!r}")
    return values


def add_pipeline_args(parser: argparse.ArgumentParser, several: bool = False) -> argparse._ArgumentGroup:
    """The options of how the stages run, shared by every tool that runs a `Pipeline`.

    Args:
        parser: the tool's parser.
        several: comma-separated lists for --backends, --precision and --topk (tools that compare
            settings side by side); else one value each.
    """
    group = parser.add_argument_group("pipeline", "how the stages run (the same options in every tool)")
    names = backend_names()
    auto_help = ("auto: tensorrt if engines and a GPU are present, else onnxruntime on CUDA, else openvino if "
                 "installed, else onnxruntime")
    if several:
        group.add_argument("--backends", type=_backend_list, default=names,
                           help=f"comma-separated: {', '.join(names)} (default all; missing ones are reported skipped)")
        group.add_argument("--precision", type=_choice_list(PRECISIONS), default=(None,),
                           help=f"comma-separated precisions to run each backend at: {', '.join(PRECISIONS)} "
                                "(default: each backend's own)")
        group.add_argument("--topk", type=_positive_ints, default=(4, 8, 16),
                           help="k values of CER on (default 4,8,16)")
    else:
        group.add_argument("--backend", default="auto", choices=["auto", *names], help=f"{auto_help} (default auto)")
        group.add_argument("--precision", choices=PRECISIONS,
                           help="graphs or engines of this precision (default: fp32 graphs; tensorrt: the "
                                "engines built); bf16: openvino only, on CPUs with BF16")
        group.add_argument("--topk", type=_positive_int,
                           help="k of category early rejection (default: the manifest's, 8)")
    group.add_argument("--cer", action=argparse.BooleanOptionalAction, default=True,
                       help="category early rejection (default on; --no-cer decodes every class)")
    group.add_argument("--threads", type=_positive_int, help="CPU threads per stage (default: the backend's choice)")
    group.add_argument("--providers", type=_names, help="onnxruntime execution providers in order, e.g. cuda,cpu")
    group.add_argument("--device", default="cpu", help="torch device of the torch backend (default cpu)")
    group.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"refuse images with more pixels than N, checked from the file's header before "
                            f"decoding (default {DEFAULT_MAX_PIXELS:,})")
    group.add_argument("--cuda-graphs", action="store_true",
                       help="tensorrt: replay captured CUDA graphs when a stage's shapes repeat (needs "
                            "cuda-python's bindings)")
    group.add_argument("--gpu-timing", action="store_true",
                       help="tensorrt: stage times from CUDA events (GPU time) instead of the host clock")
    return group


def pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    """`Pipeline.from_artifacts` keyword arguments from `add_pipeline_args` (single-value form)."""
    return {"backend": args.backend, "precision": args.precision, "topk": args.topk, "cer": args.cer,
            "threads": args.threads, "providers": args.providers, "device": args.device,
            "max_pixels": args.max_pixels, "cuda_graphs": args.cuda_graphs, "gpu_timing": args.gpu_timing}


def _warning_line(message, category, filename, lineno, file=None, line=None):
    sys.stderr.write(f"WARNING: {message}\n")


class Terminated(BaseException):
    """SIGTERM arrived: unwinds the job like Ctrl-C, so staging folders and temporary files are removed."""


def _terminate(signum, frame):
    raise Terminated


def run(job: Callable[[], object], debug: bool = False) -> int:
    """Run `job`, turning user errors into one-line messages; returns the exit code.

    SIGTERM (and Ctrl-C) unwind the job through its `finally` blocks, so nothing half-written stays
    behind; the exit codes are 143 and 130 as a shell reports them.
    """
    warnings.showwarning = _warning_line
    previous = None
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        job()
    except SedDeployError as exc:
        if debug:
            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
