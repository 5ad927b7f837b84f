"""Argument checks shared by every implementation of linear class attention (Triton, plugin, ORT op).

Torch-free: the checks read only `.shape`, `.dtype` and `.device`-like attributes through the
callers, so the numpy glue of the ONNX Runtime op can use them too.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from sed_deploy.core.errors import SedDeployError
from sed_deploy.core.optional import available

# Head dims the Triton kernel is built for: the model uses 32, 16 and 8. Larger ones would need a
# [d,d] float32 accumulator that no longer fits in registers.
MAX_HEAD_DIM = 64


class KernelInputError(SedDeployError):
    """q, k, v (or an option) that the class-attention kernel cannot take."""


def check_qkv_shapes(q_shape: Sequence[int], k_shape: Sequence[int], v_shape: Sequence[int]) -> None:
    """Raise `KernelInputError` unless q, k, v are [S,H,T,d] of one shape with 1 <= d <= MAX_HEAD_DIM.

    Args:
        q_shape: shape of q.
        k_shape: shape of k.
        v_shape: shape of v.
    """
    q_shape, k_shape, v_shape = tuple(q_shape), tuple(k_shape), tuple(v_shape)
    if len(q_shape) != 4:
        raise KernelInputError(f"expected q of rank 4 [S,H,T,d], got shape {list(q_shape)}")
    if k_shape != q_shape or v_shape != q_shape:
        raise KernelInputError(f"expected q, k, v of one shape, got {list(q_shape)}, {list(k_shape)}, {list(v_shape)}")
    head_dim = q_shape[-1]
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise KernelInputError(f"expected a head dim d in 1..{MAX_HEAD_DIM}, got {head_dim}")


def check_eps(eps: float) -> None:
    """Raise `KernelInputError` unless eps is a finite non-negative number."""
    if not isinstance(eps, (int, float)) or not 0.0 <= float(eps) < float("inf"):
        raise KernelInputError(f"expected eps a finite number >= 0, got {eps!r}")


@functools.cache
def triton_available() -> bool:
    """True when triton imports (checked once; the answer cannot change within a process)."""
    return available("triton")
