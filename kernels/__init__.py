"""Linear attention along the class axis: reference, Triton kernel, dispatch, TensorRT plugin, ONNX node.

Names are loaded on first use (PEP 562), so importing `sed_deploy.kernels` imports neither torch nor
triton nor tensorrt: the torch-free runtime can import `sed_deploy.kernels.trt_plugin` and
`sed_deploy.kernels.ort_plugin` without pulling in the model's dependencies.

| name | module | needs |
|---|---|---|
| `class_attention`, `plugin_node_export` | `dispatch` | torch |
| `linear_class_attention_reference` | `reference` | torch |
| `linear_class_attention` | `triton_linear_attention` | torch, triton (CUDA, or `TRITON_INTERPRET=1`) |
| `plugin_translation_table` | `onnx_plugin` | torch, onnx, onnxscript |
| `ort_session_options` | `ort_plugin` | numpy, onnxruntime, onnxruntime-extensions |
| `register_plugin` | `trt_plugin` | tensorrt >= 10.6 (+ torch, triton for JIT; triton for AOT builds) |
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "class_attention": "dispatch",
    "plugin_node_export": "dispatch",
    "linear_class_attention_reference": "reference",
    "linear_class_attention": "triton_linear_attention",
    "plugin_translation_table": "onnx_plugin",
    "ort_session_options": "ort_plugin",
    "register_plugin": "trt_plugin",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
