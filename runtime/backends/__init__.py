"""Stage backends behind one interface (`base.StageBackend`), found by name in one registry.

| name | class | where |
|---|---|---|
| `ort` | `onnxruntime.OrtBackend` | CPU; CUDA / TensorRT execution providers with onnxruntime-gpu |
| `openvino` | `openvino.OpenvinoBackend` | CPU: fp32, and bf16 where the CPU has it |
| `tensorrt` | `tensorrt.TensorrtBackend` | NVIDIA GPUs with engines built by `sed-build` |
| `torch` | `sed_deploy.export.torch_backend.TorchBackend` | anywhere torch is installed: the reference |

The runtime is the bottom layer and never imports a layer above it. Backends that live above it
(the torch backend lives with the PyTorch side, in `export/`) register themselves through the
`sed_deploy.backends` entry-point group of the package metadata (`pyproject.toml`); the registry
reads that group, so a backend appears in every CLI and in `Pipeline` without the runtime naming
its module. Backend modules are imported only when chosen.

`auto` picks, in this order, the first that can serve the artifacts at the precision asked:
1. tensorrt, when engines for the artifacts and a GPU are present;
2. onnxruntime, when it has its CUDA execution provider (onnxruntime-gpu on a GPU machine);
3. openvino, when installed: the fastest CPU engine measured (benchmarks/results/B_cpu; the
   only one for bf16);
4. onnxruntime on the CPU.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import cache
from pathlib import Path

from sed_deploy.core.errors import ConfigError, MissingDependencyError
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.optional import available, require

from .base import RUNTIME_PRECISIONS

ENTRY_POINT_GROUP = "sed_deploy.backends"

# the backends of this layer: name -> "module:Class"
BUILTIN = {
    "ort": "sed_deploy.runtime.backends.onnxruntime:OrtBackend",
    "openvino": "sed_deploy.runtime.backends.openvino:OpenvinoBackend",
    "tensorrt": "sed_deploy.runtime.backends.tensorrt:TensorrtBackend",
}
ALIASES = {"onnxruntime": "ort", "trt": "tensorrt", "pytorch": "torch", "ov": "openvino"}
# what to install for a registered backend that is absent (its entry point is in the metadata
# whenever sed-deploy is installed; only its dependencies may be missing)
EXTRA_HINT = {"torch": "export", "openvino": "openvino"}


@cache
def registry() -> dict[str, str]:
    """Every known backend: name -> "module:Class" (built-in first, then registered ones)."""
    found = dict(BUILTIN)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(entry.name, entry.value)
    return found


def backend_names() -> tuple[str, ...]:
    """The names `--backend` accepts besides auto, in a stable order."""
    return tuple(registry())


def canonical_name(name: str) -> str:
    name = ALIASES.get(name.lower(), name.lower())
    if name != "auto" and name not in registry():
        raise ConfigError(f"unknown backend {name!r}; expected auto, {', '.join(registry())}")
    return name


def tensorrt_unavailable_reason(manifest: Manifest, folder: str | Path, precision: str | None = None) -> str | None:
    """Why the tensorrt backend cannot serve these artifacts here (None if it can)."""
    if not available("tensorrt"):
        return "tensorrt is not installed"
    try:
        module = importlib.import_module(registry()["tensorrt"].split(":")[0])
    except ImportError as exc:
        return f"the tensorrt backend does not import: {exc}"
    return module.engines_unavailable_reason(manifest, folder, precision)


def choose_backend(name: str, manifest: Manifest, folder: str | Path, precision: str | None = None) -> str:
    """The backend `name` stands for ("auto" resolved)."""
    name = canonical_name(name)
    if name != "auto":
        return name
    if precision not in RUNTIME_PRECISIONS and tensorrt_unavailable_reason(manifest, folder, precision) is None:
        return "tensorrt"
    if precision not in RUNTIME_PRECISIONS and _ort_has_cuda():
        return "ort"
    return "openvino" if available("openvino") else "ort"


def _ort_has_cuda() -> bool:
    if not available("onnxruntime"):
        return False
    return "CUDAExecutionProvider" in require("onnxruntime").get_available_providers()


def backend_class(name: str):
    """The class of backend `name`, imported now."""
    name = canonical_name(name)
    module, _, cls = registry()[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        extra = EXTRA_HINT.get(name)
        hint = f"; install it with: pip install 'sed-deploy[{extra}]'" if extra else ""
        raise MissingDependencyError(f"the {name} backend does not import ({exc}){hint}") from None
