"""Bilinear resizing in numpy with PyTorch's semantics (`F.interpolate`, align_corners=False).

The runtime does not import torch, yet its pre- and post-processing must give what the original's
`F.interpolate(..., mode="bilinear", align_corners=False)` gives (no antialiasing): source
coordinate (dst + 0.5) * in / out - 0.5, clamped at 0, rounded to float32 as PyTorch's CPU kernel does.
"""

from __future__ import annotations

import numpy as np


def linear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of 1-D linear interpolation from `in_size` to `out_size` samples.

    Returns:
        (lo, hi, w_lo, w_hi): int64 [out_size] neighbours and float32 [out_size] weights.
    """
    scale = np.float32(np.float32(in_size) / np.float32(out_size))
    # PyTorch's kernel computes scale * (dst + 0.5) - 0.5 as one fused multiply-add: one rounding
    # to float32 of the exact value, which float64 arithmetic reproduces.
    src = (np.float64(scale) * (np.arange(out_size, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    lo = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    hi = np.minimum(lo + 1, in_size - 1)
    w_hi = (src - lo.astype(np.float32)).astype(np.float32)
    return lo, hi, (np.float32(1.0) - w_hi).astype(np.float32), w_hi


def resize_rows(x: np.ndarray, taps: tuple[np.ndarray, ...]) -> np.ndarray:
    """Interpolate axis -2 of `x` with `linear_taps` output."""
    lo, hi, w_lo, w_hi = taps
    return x[..., lo, :] * w_lo[:, None] + x[..., hi, :] * w_hi[:, None]


def resize_cols(x: np.ndarray, taps: tuple[np.ndarray, ...]) -> np.ndarray:
    """Interpolate axis -1 of `x` with `linear_taps` output."""
    lo, hi, w_lo, w_hi = taps
    return x[..., lo] * w_lo + x[..., hi] * w_hi


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize the last two axes of float32 `x` to (height, width)."""
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-2:] == (height, width):
        return x.copy()
    x = resize_rows(x, linear_taps(x.shape[-2], height))
    return resize_cols(x, linear_taps(x.shape[-1], width)).astype(np.float32, copy=False)
