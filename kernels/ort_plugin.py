"""ONNX Runtime (CPU) support for the class-attention plugin node, so plugin graphs validate here.

The node `sed::linear_class_attention` (see `onnx_plugin`) is TensorRT's; ONNX Runtime does not
know it. `ort_session_options()` returns `SessionOptions` in which it runs as an onnxruntime-extensions
Python custom op backed by `linear_class_attention_numpy`, the numpy twin of the torch reference.
Torch-free, so the runtime can use it.

Limits: float32 only (the exported graphs are float32; float16 engines come from TensorRT), and the
op hands its result back to ONNX Runtime as a Python list, so it is for validation at test sizes,
not for speed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sed_deploy.core.errors import MissingDependencyError
from sed_deploy.core.optional import available, require

from .checks import check_eps, check_qkv_shapes
from .onnx_plugin import DOMAIN, PLUGIN_NAME

_REGISTERED: list[Any] = []


def linear_class_attention_numpy(q: np.ndarray, k: np.ndarray, v: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """The reference formula in numpy, computed in float32 like the torch reference.

    Args:
        q: queries, [S,H,T,d].
        k: keys, [S,H,T,d].
        v: values, [S,H,T,d].
        eps: added to the normaliser.

    Returns:
        [S,H,T,d] in q's dtype.
    """
    check_qkv_shapes(q.shape, k.shape, v.shape)
    check_eps(eps)
    q32, k32, v32 = (np.asarray(x, dtype=np.float32) for x in (q, k, v))
    num_classes = v32.shape[-2]
    phi_q = np.where(q32 > 0, q32, np.expm1(np.minimum(q32, 0))) + np.float32(1)
    phi_k = np.where(k32 > 0, k32, np.expm1(np.minimum(k32, 0))) + np.float32(1)
    kv = np.swapaxes(phi_k, -1, -2) @ (v32 / np.float32(num_classes))  # [S,H,d,d]
    normaliser = phi_q @ phi_k.sum(axis=-2)[..., None] + np.float32(eps)  # [S,H,T,1]
    out = (phi_q @ kv) / normaliser * np.float32(num_classes)
    return out.astype(q.dtype, copy=False)


def register_ort_custom_op() -> str:
    """Declare the node to onnxruntime-extensions (once per process); returns its library path."""
    extensions = _require_extensions()
    if not _REGISTERED:
        op = extensions.onnx_op(
            op_type=f"{DOMAIN}::{PLUGIN_NAME}",
            inputs=[extensions.PyCustomOpDef.dt_float] * 3,
            outputs=[extensions.PyCustomOpDef.dt_float],
            attrs={"eps": extensions.PyCustomOpDef.dt_float},
        )(_run_node)
        _REGISTERED.append(op)
    return extensions.get_library_path()


def ort_session_options(options: Any = None) -> Any:
    """`onnxruntime.SessionOptions` (the given ones, or new) that can run the plugin node on the CPU."""
    onnxruntime = require("onnxruntime", "running the class-attention plugin node in ONNX Runtime")
    if options is None:
        options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(register_ort_custom_op())
    return options


def _run_node(q: np.ndarray, k: np.ndarray, v: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    return linear_class_attention_numpy(q, k, v, eps)


def _require_extensions() -> Any:
    feature = "running the class-attention plugin node in ONNX Runtime"
    if not available("onnxruntime_extensions"):
        raise MissingDependencyError(
            f"onnxruntime-extensions is not installed (needed for {feature}); install it with: "
            "pip install 'sed-deploy[kernels]'"
        )
    return require("onnxruntime_extensions", feature)
