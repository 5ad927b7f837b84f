"""Stage backends behind one interface (`base.StageBackend`), found by name in one registry.

| name | class | where |
|---|---|---|
| `ort` | `onnxruntime.OrtBackend` | CPU; CUDA / TensorRT execution providers with onnxruntime-gpu |
| `tensorrt` | `tensorrt.TensorrtBackend` | NVIDIA GPUs with engines built by `sed-build` |
| `torch` | `sed_deploy.export.torch_backend.TorchBackend` | anywhere torch is installed: the reference |

The runtime is the bottom layer and never imports a layer above it. Backends that live above it
(the torch backend lives with the PyTorch side, in `export/`) register themselves through the
`sed_deploy.backends` entry-point group of the package metadata (`pyproject.toml`); the registry
reads that group, so a backend appears in every CLI and in `Pipeline` without the runtime naming
its module. Backend modules are imported only when chosen.

`auto` picks tensorrt when engines for the artifacts and a GPU are present, else onnxruntime (CUDA
when available, else CPU).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from functools import cache
from pathlib import Path

from ..errors import ConfigError, MissingDependencyError
from ..manifest import Manifest
from ..optional import available

ENTRY_POINT_GROUP = "sed_deploy.backends"

# the backends of this layer: name -> "module:Class"
BUILTIN = {
    "ort": "sed_deploy.runtime.backends.onnxruntime:OrtBackend",
    "tensorrt": "sed_deploy.runtime.backends.tensorrt:TensorrtBackend",
}
ALIASES = {"onnxruntime": "ort", "trt": "tensorrt", "pytorch": "torch"}
# what to install for a registered backend that is absent (its entry point is in the metadata
# whenever sed-deploy is installed; only its dependencies may be missing)
EXTRA_HINT = {"torch": "export"}


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
    return "tensorrt" if tensorrt_unavailable_reason(manifest, folder, precision) is None else "ort"


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
