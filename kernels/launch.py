"""Torch-free launch details of the Triton class-attention kernel: block sizes and jitting per mode.

Shared by the torch wrapper (`triton_linear_attention`) and the TensorRT plugin, whose AOT build
compiles the same kernel with the same constants and needs neither torch nor a tensor.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from sed_deploy.core.optional import require

_JITTED: dict[bool, Any] = {}


@dataclass(frozen=True)
class LaunchConfig:
    """Compile-time constants and warps of one kernel variant."""

    head_dim: int
    block_d: int
    block_t: int
    fp16_dot: bool
    eps: float = 1e-6
    num_warps: int = 4

    def constexprs(self) -> dict[str, int | float | bool]:
        return {
            "EPS": self.eps,
            "HEAD_DIM": self.head_dim,
            "BLOCK_D": self.block_d,
            "BLOCK_T": self.block_t,
            "FP16_DOT": self.fp16_dot,
        }


def launch_config(head_dim: int, num_classes: int | None, fp16: bool, eps: float = 1e-6) -> LaunchConfig:
    """Block sizes for a head dim and (if known) a class count.

    BLOCK_D pads d up to a power of two of at least 16 (tl.dot's minimum). BLOCK_T is 64 for large
    T, smaller for small T so that T = 1 does not stream 63 masked rows; `num_classes=None` (unknown
    when an engine is built for a range of T) picks 64.
    """
    block_d = max(16, 1 << (head_dim - 1).bit_length())
    block_t = 64
    if num_classes is not None and num_classes <= 32:
        block_t = 16 if num_classes <= 16 else 32
    return LaunchConfig(head_dim=head_dim, block_d=block_d, block_t=block_t, fp16_dot=fp16, eps=float(eps))


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (`TRITON_INTERPRET=1`)."""
    triton = require("triton", "the Triton class-attention kernel")
    knobs = getattr(triton, "knobs", None)
    if knobs is not None:
        return bool(knobs.runtime.interpret)
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def jit_kernel(compiled: bool = False):
    """The jitted kernel for the current mode (compiled, or interpreted under `TRITON_INTERPRET=1`).

    Args:
        compiled: always the compiler's `JITFunction`, whatever `TRITON_INTERPRET` says (AOT builds).
    """
    triton = require("triton", "the Triton class-attention kernel")
    mode = False if compiled else interpreting()
    if mode not in _JITTED:
        from . import _triton_kernels

        source = _triton_kernels.linear_class_attention_kernel
        # triton.jit picks compiler or interpreter from the environment at decoration time.
        _JITTED[mode] = triton.jit(source) if mode == interpreting() else triton.runtime.JITFunction(source)
    return _JITTED[mode]
