"""The settings of each backend as one typed object, parsed once and passed whole to the backend.

`BackendOptions` holds what every backend reads (the precision, CPU threads); each backend that has
settings of its own has a subclass, and a backend class names its own as `Options`. A caller may
give the base class (it applies to whichever backend `auto` picks) or a backend's own class (which
names that backend): `Pipeline.from_artifacts(path, options=OrtOptions(providers=("cuda", "cpu")))`.

The classes are plain data: the torch backend's options are declared here too, so that the CLIs
and the server client can check them without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sed_deploy.core.errors import ConfigError

# Precisions a stage can run at: graph variants written by sed-export, engines built by sed-build,
# or a runtime precision.
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
MAX_THREADS = 1024


@dataclass(frozen=True)
class BackendOptions:
    """What every backend reads.

    Attributes:
        precision: one of `PRECISIONS`: the stage graphs of that precision (the variants exported
            with sed-export --precision), or the engines of that precision (tensorrt); None: fp32
            graphs, or the engines `engine_cache.choose_engines` picks. A runtime precision
            (`base.RUNTIME_PRECISIONS`: bf16) reads the fp32 graphs and is run at that precision
            by the backends that support it (openvino).
        threads: intra-op CPU threads (None: the backend's choice, one per core).
    """

    precision: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        check_options(self)
        if isinstance(getattr(self, "providers", None), list):  # frozen: set once, here
            object.__setattr__(self, "providers", tuple(self.providers))

    def specific(self) -> dict[str, Any]:
        """The settings this class adds to `BackendOptions`, by name."""
        common = {f.name for f in fields(BackendOptions)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in common}

    def changed(self) -> list[str]:
        """Names of the backend-specific settings that differ from their defaults."""
        default = type(self)(precision=self.precision, threads=self.threads)
        return [name for name, value in self.specific().items() if getattr(default, name) != value]


@dataclass(frozen=True)
class OrtOptions(BackendOptions):
    """ONNX Runtime: `providers` in order of preference ("cpu", "cuda", "tensorrt" or full names;
    None: CUDA if present, then CPU)."""

    providers: tuple[str, ...] | None = None


@dataclass(frozen=True)
class OpenvinoOptions(BackendOptions):
    """OpenVINO: the precision (bf16 where the CPU has it) and threads say it all."""


@dataclass(frozen=True)
class TensorrtOptions(BackendOptions):
    """TensorRT: `cuda_graphs` replays captured CUDA graphs when a stage's shapes repeat;
    `gpu_timing` times stages with CUDA events. `threads` is for the text stage when it runs on
    ONNX Runtime (no engine for it)."""

    cuda_graphs: bool = False
    gpu_timing: bool = False


@dataclass(frozen=True)
class TorchOptions(BackendOptions):
    """PyTorch: the torch `device` ("cpu", "cuda", "cuda:1")."""

    device: str = "cpu"


# the options class of each backend of sed-deploy (a registered backend without one takes the base)
OPTIONS_OF: dict[str, type[BackendOptions]] = {
    "ort": OrtOptions, "openvino": OpenvinoOptions, "tensorrt": TensorrtOptions, "torch": TorchOptions,
}


def backend_of(options: BackendOptions) -> str | None:
    """The backend a backend-specific options object names; None for the base class."""
    for name, cls in OPTIONS_OF.items():
        if type(options) is cls:
            return name
    return None


def options_for(backend: str, options: BackendOptions | None,
                cls: type[BackendOptions] | None = None) -> BackendOptions:
    """`options` as an instance of `cls` (default: the options class of `backend`), refusing in one line
    settings that belong to another backend."""
    cls = cls or OPTIONS_OF.get(backend, BackendOptions)
    if options is None:
        return cls()
    if isinstance(options, cls):
        return options
    named = backend_of(options)
    if named is not None and named != backend and options.changed():
        settings = ", ".join(options.changed())
        one = "," not in settings
        raise ConfigError(f"{settings} {'is a setting' if one else 'are settings'} of the {named} backend, not of "
                          f"{backend}; drop {'it' if one else 'them'} or choose --backend {named}")
    return cls(precision=options.precision, threads=options.threads)


def check_options(options: BackendOptions) -> None:
    """`ConfigError` (one line) for a setting of the wrong type or out of range."""
    where = type(options).__name__
    if options.precision is not None and options.precision not in PRECISIONS:
        raise ConfigError(f"{where}: unknown precision {options.precision!r}; expected one of {', '.join(PRECISIONS)}")
    threads = options.threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or not 1 <= threads <= MAX_THREADS):
        raise ConfigError(f"{where}: threads must be a whole number from 1 to {MAX_THREADS}, got {threads!r}")
    providers = getattr(options, "providers", None)
    if providers is not None and (isinstance(providers, str) or not isinstance(providers, tuple | list)
                                  or not providers or not all(isinstance(p, str) and p for p in providers)):
        raise ConfigError(f"{where}: providers must be a list of names such as ('cuda', 'cpu'), got {providers!r}")
    device = getattr(options, "device", "cpu")
    if not isinstance(device, str) or not device:
        raise ConfigError(f"{where}: device must be a torch device name such as 'cpu' or 'cuda', got {device!r}")
    for flag in ("cuda_graphs", "gpu_timing"):
        if not isinstance(getattr(options, flag, False), bool):
            raise ConfigError(f"{where}: {flag} must be True or False, got {getattr(options, flag)!r}")
