"""Small tensor operations shared by the model, written so they export cleanly to ONNX opset 17."""

from __future__ import annotations

import torch


def l2_normalize(x: torch.Tensor, dim: int, eps: float = 1e-12) -> torch.Tensor:
    """`F.normalize(x, dim=dim)`: x / max(||x||, eps).

    Written with a sum of squares: F.normalize exports as ReduceL2, whose axes became an input
    in opset 18 and which the opset 17 converter then fails on.
    """
    return x / (x * x).sum(dim=dim, keepdim=True).sqrt().clamp_min(eps)
