"""What the builder and the backend both need from TensorRT itself: the version floor and a logger
that keeps TensorRT's error messages, so a failure becomes one line that quotes TensorRT.

TensorRT >= 10.3 (JetPack 6.1/6.2) is the floor: the name-based API, `execute_async_v3`, user-managed
device memory (`set_device_memory(ptr, size)` since 10.1) and strongly typed networks all exist
there. JetPack 5's TensorRT 8.5 runs on Python 3.8 and makes implicit-batch networks by default.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import MissingDependencyError
from .optional import require

MIN_TENSORRT = (10, 3)
PLUGIN_TENSORRT = (10, 6)  # tensorrt.plugin (Python plugins)
AOT_TENSORRT = (10, 9)  # tensorrt.plugin.aot_impl
LOG = logging.getLogger(__name__)  # the CLIs show its warnings as one line each (core.cli.run)


def version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as "10.13.3.9"."""
    parts = [int(p) if p.isdigit() else 0 for p in str(version).split(".")[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def require_tensorrt(feature: str = "the tensorrt backend", minimum: tuple[int, int] = MIN_TENSORRT) -> Any:
    """The tensorrt module, or `MissingDependencyError` in one line when absent or older than `minimum`."""
    trt = require("tensorrt", feature)
    have = version_tuple(trt.__version__)
    if have < minimum:
        raise MissingDependencyError(f"{feature} needs TensorRT >= {minimum[0]}.{minimum[1]}; this is "
                                     f"{have[0]}.{have[1]} (JetPack 6.1 or later ships 10.3)")
    return trt


def capturing_logger(trt: Any) -> Any:
    """A TensorRT logger that keeps error messages (`.errors`) and passes warnings to `logging`."""

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = int(severity)
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors.append(str(msg))
            elif level == int(trt.ILogger.Severity.WARNING):
                LOG.warning("TensorRT: %s", msg)

        def reason(self) -> str:
            """The first error TensorRT logged, or a pointer to where it would be."""
            return self.errors[0] if self.errors else "TensorRT logged no error"

    return _Logger()
