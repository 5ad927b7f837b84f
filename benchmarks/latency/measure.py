"""Small measuring helpers of sed-bench: latency summaries, peak resident memory, a memory ceiling.

Peak RSS is read from Linux's `/proc/self/status` (VmHWM) after resetting it through
`/proc/self/clear_refs`, so each setting gets its own peak; where that is not possible the process's
peak since start (`getrusage`) is reported instead and the method says so.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Sequence

import numpy as np

PERCENTILES = {"median": 50, "p90": 90, "p99": 99}


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median, p90, p99, min, max and mean of timings, in milliseconds (linear interpolation).

    Ordered by construction: min <= median <= p90 <= p99 <= max.
    """
    ms = 1000.0 * np.asarray(seconds, dtype=np.float64)
    summary = {name: float(np.percentile(ms, q)) for name, q in PERCENTILES.items()}
    summary.update(min=float(ms.min()), max=float(ms.max()), mean=float(ms.mean()))
    return {k: round(v, 3) for k, v in summary.items()}


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class PeakRss:
    """Peak resident memory of this process over a span of work."""

    def __init__(self) -> None:
        self.method = "VmHWM" if _status_kb("VmHWM") is not None else "ru_maxrss"

    def reset(self) -> None:
        """Start a new span (no-op where the peak cannot be reset)."""
        if self.method == "VmHWM":
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            except OSError:
                self.method = "ru_maxrss"

    def peak_mb(self) -> float:
        """Peak RSS in MiB since the last `reset` (VmHWM) or since the process started (ru_maxrss)."""
        if self.method == "VmHWM":
            kb = _status_kb("VmHWM") or 0
        else:
            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            kb = kb // 1024 if sys.platform == "darwin" else kb  # bytes on macOS
        return round(kb / 1024, 1)

    @property
    def scope(self) -> str:
        return "setting" if self.method == "VmHWM" else "process"


def available_memory_mb() -> float | None:
    """MemAvailable of /proc/meminfo in MiB, or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def limit_address_space(megabytes: float) -> bool:
    """Cap this process's address space at its current size plus `megabytes`.

    An allocation beyond it fails inside the process (a Python or backend error the benchmark reports)
    instead of waking the kernel's out-of-memory killer, which may pick any process on the machine.
    Returns False where the limit cannot be set.
    """
    current_kb = _status_kb("VmSize")
    if current_kb is None:
        return False
    limit = int((current_kb / 1024 + megabytes) * 1024 * 1024)
    with contextlib.suppress(ValueError, OSError):
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        return True
    return False
