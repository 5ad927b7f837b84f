"""The one entry point the model calls for linear attention along the class axis.

Today it always runs the plain-torch reference, which is also what every exported graph contains.
"""

from __future__ import annotations

import torch

from .reference import linear_class_attention_reference


def class_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear class attention of [S,H,T,d] q, k, v (see `reference`)."""
    return linear_class_attention_reference(q, k, v)
