"""The command-line options of how the stages run, declared once for every tool that runs a `Pipeline`.

`add_pipeline_args` adds the group (backend, precision, top-k, CER, threads, the backend-specific
settings, the pixel budget) to sed-segment, sed-eval, sed-bench and sed-serve alike, so a new
backend or option appears in all of them at once. `pipeline_settings` parses the group once into
what `Pipeline.from_artifacts` takes: the backend, one typed options object (`backends.options`)
and the pipeline's own settings. A backend-specific flag names its backend: `--providers` with
`--backend auto` means ort, and with another backend it is refused in one line.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

from sed_deploy.core.cli import choice_list, comma_list, positive_int, positive_ints
from sed_deploy.core.errors import ConfigError, SedDeployError

from .backends import backend_names, canonical_name
from .backends.options import OPTIONS_OF, PRECISIONS, BackendOptions, options_for
from .decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT

# flag (argparse dest) -> (the backend it belongs to, its default)
BACKEND_FLAGS: dict[str, tuple[str, Any]] = {
    "providers": ("ort", None),
    "device": ("torch", "cpu"),
    "cuda_graphs": ("tensorrt", False),
    "gpu_timing": ("tensorrt", False),
}


def flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _backend_list(text: str) -> tuple[str, ...]:
    """Comma-separated backend names, aliases allowed ("onnxruntime" is "ort")."""
    values = comma_list(text)
    if not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of backends, got {text!r}")
    try:
        return tuple(dict.fromkeys(canonical_name(v) for v in values))
    except SedDeployError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pixels(text: str) -> int:
    value = positive_int(text)
    if value > MAX_PIXELS_LIMIT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_PIXELS_LIMIT:,} pixels, got {value:,}")
    return value


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
        group.add_argument("--precision", type=choice_list(PRECISIONS), default=(None,),
                           help=f"comma-separated precisions to run each backend at: {', '.join(PRECISIONS)} "
                                "(default: each backend's own)")
        group.add_argument("--topk", type=positive_ints, default=(4, 8, 16),
                           help="k values of CER on (default 4,8,16)")
    else:
        group.add_argument("--backend", default="auto", choices=["auto", *names], help=f"{auto_help} (default auto)")
        group.add_argument("--precision", choices=PRECISIONS,
                           help="graphs or engines of this precision (default: fp32 graphs; tensorrt: the "
                                "engines built); bf16: openvino only, on CPUs with BF16")
        group.add_argument("--topk", type=positive_int,
                           help="k of category early rejection (default: the manifest's, 8)")
    group.add_argument("--cer", action=argparse.BooleanOptionalAction, default=True,
                       help="category early rejection (default on; --no-cer decodes every class)")
    group.add_argument("--threads", type=positive_int, help="CPU threads per stage (default: the backend's choice)")
    group.add_argument("--max-pixels", type=_pixels, default=DEFAULT_MAX_PIXELS, metavar="N",
                       help=f"refuse images with more pixels than N, checked from the file's header before "
                            f"decoding (default {DEFAULT_MAX_PIXELS:,}; at most {MAX_PIXELS_LIMIT:,})")
    specific = parser.add_argument_group("backend-specific", "settings of one backend (refused with another)")
    specific.add_argument("--providers", type=comma_list, help="ort: execution providers in order, e.g. cuda,cpu")
    specific.add_argument("--device", default="cpu", help="torch: the torch device (default cpu)")
    specific.add_argument("--cuda-graphs", action="store_true",
                          help="tensorrt: replay captured CUDA graphs when a stage's shapes repeat (needs "
                               "cuda-python's bindings)")
    specific.add_argument("--gpu-timing", action="store_true",
                          help="tensorrt: stage times from CUDA events (GPU time) instead of the host clock")
    return group


def specific_flags(args: argparse.Namespace) -> dict[str, str]:
    """The backend-specific flags given (differing from their defaults): flag -> its backend."""
    return {flag_name(dest): backend for dest, (backend, default) in BACKEND_FLAGS.items()
            if getattr(args, dest, default) != default}


def backend_options(backend: str, args: argparse.Namespace, precision: str | None = None) -> BackendOptions:
    """The options object of `backend` ("auto": the base class) from the parsed flags.

    Raises:
        ConfigError: a flag of another backend was given.
    """
    if backend == "auto":
        return BackendOptions(precision=precision, threads=args.threads)
    cls = OPTIONS_OF.get(backend, BackendOptions)
    foreign = [flag for flag, owner in specific_flags(args).items() if owner != backend]
    if foreign:
        owners = sorted({specific_flags(args)[f] for f in foreign})
        raise ConfigError(f"{', '.join(foreign)} {'applies' if len(foreign) == 1 else 'apply'} to the "
                          f"{' and '.join(owners)} backend, not to {backend}; drop "
                          f"{'it' if len(foreign) == 1 else 'them'} or choose --backend {owners[0]}")
    own = {dest: getattr(args, dest) for dest, (owner, _) in BACKEND_FLAGS.items() if owner == backend}
    return options_for(backend, cls(precision=precision, threads=args.threads, **own))


@dataclass(frozen=True)
class PipelineSettings:
    """What `Pipeline.from_artifacts` takes besides the folder, parsed once from the command line."""

    backend: str
    options: BackendOptions
    topk: int | None
    cer: bool
    max_pixels: int

    def kwargs(self) -> dict[str, Any]:
        return {"backend": self.backend, "options": self.options, "topk": self.topk, "cer": self.cer,
                "max_pixels": self.max_pixels}


def pipeline_settings(args: argparse.Namespace) -> PipelineSettings:
    """`add_pipeline_args` (single-value form) parsed into one `PipelineSettings`.

    A backend-specific flag with `--backend auto` chooses its backend; flags of two backends, or of
    a backend other than the one chosen, are refused in one line.
    """
    backend = canonical_name(args.backend)
    owners = sorted(set(specific_flags(args).values()))
    if backend == "auto" and len(owners) > 1:
        raise ConfigError(f"{', '.join(specific_flags(args))} belong to different backends ({', '.join(owners)}); "
                          "give the settings of one backend")
    if backend == "auto" and owners:
        backend = owners[0]
    options = backend_options(backend, args, args.precision)
    return PipelineSettings(backend, options, args.topk, args.cer, args.max_pixels)


def options_per_backend(args: argparse.Namespace) -> dict[str, BackendOptions]:
    """The list form (`several=True`): each backend of --backends with its own flags (no precision).

    Raises:
        ConfigError: a backend-specific flag of a backend that --backends leaves out.
    """
    flags = specific_flags(args)
    stray = [flag for flag, owner in flags.items() if owner not in args.backends]
    if stray:
        owners = sorted({flags[f] for f in stray})
        verb = "applies" if len(stray) == 1 else "apply"
        raise ConfigError(f"{', '.join(stray)} {verb} to the {' and '.join(owners)} backend, which --backends "
                          "leaves out; add it to --backends or drop the flag")
    result = {}
    for backend in args.backends:
        cls = OPTIONS_OF.get(backend, BackendOptions)
        own = {dest: getattr(args, dest) for dest, (owner, _) in BACKEND_FLAGS.items() if owner == backend}
        result[backend] = cls(threads=args.threads, **own)
    return result
