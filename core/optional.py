"""Imports of optional packages, in one place.

Every optional dependency (torch, onnxruntime, tensorrt, pycuda, triton, ...) is imported through
`require`, so that a missing package becomes a `MissingDependencyError` naming the pip extra that
provides it, and nothing is ever installed automatically. `available` answers without raising.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# import name -> pip extra of sed-deploy that installs it
EXTRA_OF: dict[str, str] = {
    "torch": "export",
    "torchvision": "export",
    "timm": "export",
    "open_clip": "export",
    "onnx": "export",
    "onnxscript": "export",
    "onnx_graphsurgeon": "export",
    "onnxruntime": "ort",
    "openvino": "openvino",
    "tensorrt": "trt",
    "pycuda": "trt-pycuda",
    "cuda": "trt",
    "polygraphy": "export",
    "triton": "kernels",
    "skimage": "demo",
    "regex": "text",
    "ftfy": "text",
    "matplotlib": "bench",
    "pytriton": "serve",
    "tritonclient": "serve",
}

# A module that imports but lacks this attribute is not a usable install (for example the
# `tensorrt-stubs` package makes `import tensorrt` succeed as an empty namespace package).
_PROOF_ATTRIBUTE: dict[str, str] = {"tensorrt": "Builder", "onnxruntime": "InferenceSession", "openvino": "Core"}


def available(name: str) -> bool:
    """True if `name` can be imported and looks like a real install. Never raises."""
    try:
        require(name)
    except MissingDependencyError:
        return False
    return True


def require(name: str, feature: str | None = None) -> ModuleType:
    """Import and return module `name`, or raise `MissingDependencyError` with the install hint.

    Args:
        name: the import name (``"onnxruntime"``, ``"tensorrt"``, ...).
        feature: what the caller wanted to do, used in the message.
    """
    what = f" (needed for {feature})" if feature else ""
    extra = EXTRA_OF.get(name.split(".")[0])
    hint = f"pip install 'sed-deploy[{extra}]'" if extra else f"pip install {name}"
    if importlib.util.find_spec(name.split(".")[0]) is None:
        raise MissingDependencyError(f"{name} is not installed{what}; install it with: {hint}")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        raise MissingDependencyError(f"{name} is installed but fails to import{what}: {exc}") from exc
    proof = _PROOF_ATTRIBUTE.get(name)
    if proof is not None and not hasattr(module, proof):
        raise MissingDependencyError(
            f"{name} imports but has no '{proof}': it is a stub or broken install{what}; reinstall with: {hint}"
        )
    return module
