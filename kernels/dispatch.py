"""The one entry point the model calls for linear attention along the class axis, and its routing.

`class_attention(q, k, v)` picks, in this order:

1. inside `plugin_node_export()`: the custom op `sed_deploy::linear_class_attention`, which the ONNX
   exporter writes as one TensorRT plugin node (see `onnx_plugin`);
2. while torch.export / dynamo / TorchScript is tracing: the plain-torch reference, so a default
   export contains only standard ONNX ops, on any device;
3. CUDA tensors with Triton importable: the fused Triton kernel;
4. otherwise the reference.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from contextvars import ContextVar

import torch

from .checks import triton_available
from .reference import linear_class_attention_reference

EPS = 1e-6

_PLUGIN_NODE: ContextVar[bool] = ContextVar("sed_deploy_plugin_node", default=False)


def class_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Linear class attention of [S,H,T,d] q, k, v (see `reference`); [S,H,T,d] in q's dtype."""
    if _PLUGIN_NODE.get():
        from . import custom_op

        return custom_op.linear_class_attention_op(q, k, v, EPS)
    if _tracing():
        return linear_class_attention_reference(q, k, v, EPS)
    if q.is_cuda and triton_available():
        from .triton_linear_attention import linear_class_attention

        return linear_class_attention(q, k, v, EPS)
    return linear_class_attention_reference(q, k, v, EPS)


@contextlib.contextmanager
def plugin_node_export() -> Iterator[None]:
    """Route `class_attention` to the custom op while exporting, so the graph gets one plugin node.

    Use with `torch.onnx.export(..., dynamo=True, custom_translation_table=plugin_translation_table())`
    (from `sed_deploy.kernels.onnx_plugin`). Outside an export the custom op still computes the
    right numbers (Triton on CUDA, the reference elsewhere).
    """
    importlib.import_module(".custom_op", __package__)  # registers the op before the exporter looks for it
    token = _PLUGIN_NODE.set(True)
    try:
        yield
    finally:
        _PLUGIN_NODE.reset(token)


def _tracing() -> bool:
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    return torch.jit.is_tracing() or torch.jit.is_scripting()
