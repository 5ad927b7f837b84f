"""The torch custom op `sed_deploy::linear_class_attention`: what the exporter sees in plugin mode.

Registering it (importing this module) gives torch one opaque op for the whole class-attention core,
with a fake implementation for tracing (q's shape and dtype, contiguous) and a real one: the
Triton kernel on CUDA when triton imports, the plain-torch reference otherwise. `onnx_plugin` maps it
to a single ONNX node.
"""

from __future__ import annotations

import torch

from .checks import triton_available
from .reference import linear_class_attention_reference

OP_NAME = "sed_deploy::linear_class_attention"


@torch.library.custom_op(OP_NAME, mutates_args=())
def linear_class_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    """Linear class attention of [S,H,T,d] q, k, v; [S,H,T,d] in q's dtype (see `reference`)."""
    if q.is_cuda and triton_available():
        from .triton_linear_attention import linear_class_attention

        return linear_class_attention(q, k, v, eps, out=q.new_empty(q.shape))
    return linear_class_attention_reference(q, k, v, eps).contiguous()


@linear_class_attention_op.register_fake
def _linear_class_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float) -> torch.Tensor:
    return q.new_empty(q.shape)  # contiguous, like both real implementations
