"""Stage backends behind one interface (`base.StageBackend`), chosen by name.

| name | module | where |
|---|---|---|
| `ort` | `onnxruntime` | CPU; CUDA / TensorRT execution providers with onnxruntime-gpu |
| `torch` | `torch` | anywhere torch is installed: the reference |
| `tensorrt` | `tensorrt` | NVIDIA GPUs with engines built by `sed-build` |

`auto` picks tensorrt when engines for the artifacts and a GPU are present, else onnxruntime (CUDA
when available, else CPU). Backend modules are imported only when chosen.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ..errors import ConfigError
from ..manifest import Manifest
from ..optional import available

BACKENDS = {
    "ort": ("sed_deploy.runtime.backends.onnxruntime", "OrtBackend"),
    "torch": ("sed_deploy.runtime.backends.torch", "TorchBackend"),
    "tensorrt": ("sed_deploy.runtime.backends.tensorrt", "TensorrtBackend"),
}
ALIASES = {"onnxruntime": "ort", "trt": "tensorrt", "pytorch": "torch"}


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name != "auto" and name not in BACKENDS:
        raise ConfigError(f"unknown backend {name!r}; expected auto, {', '.join(BACKENDS)}")
    return name


def tensorrt_unavailable_reason(manifest: Manifest, folder: str | Path) -> str | None:
    """Why the tensorrt backend cannot serve these artifacts here (None if it can)."""
    if not available("tensorrt"):
        return "tensorrt is not installed"
    try:
        module = importlib.import_module(BACKENDS["tensorrt"][0])
    except ImportError as exc:
        return f"the tensorrt backend does not import: {exc}"
    return module.engines_unavailable_reason(manifest, folder)


def choose_backend(name: str, manifest: Manifest, folder: str | Path) -> str:
    """The backend `name` stands for ("auto" resolved)."""
    name = canonical_name(name)
    if name != "auto":
        return name
    return "tensorrt" if tensorrt_unavailable_reason(manifest, folder) is None else "ort"


def backend_class(name: str):
    module, cls = BACKENDS[canonical_name(name)]
    return getattr(importlib.import_module(module), cls)
