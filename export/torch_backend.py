"""Stage backend on PyTorch: the same stage modules that were exported, for reference and debugging.

It lives with the PyTorch side (it needs `model/` and the stage wrappers) and registers itself with
the runtime's backend registry through the `sed_deploy.backends` entry point (`pyproject.toml`), so
the torch-free runtime never imports it by name. torch is imported only when the backend loads. The
model is rebuilt from the manifest (the checkpoint it names, or the same seeded random weights) once
per artifacts folder and shared by the six stages; its text weights are checked against the
manifest's digest.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.base import BackendError, StageBackend
from sed_deploy.runtime.backends.options import BackendOptions, TorchOptions

_MODELS: dict[tuple, object] = {}


def shared_model(manifest: Manifest, device: str):
    """The PyTorch SED the manifest was exported from, built once per (weights, device)."""
    key = (manifest.backbone, tuple(sorted(manifest.weights.items())), device)
    if key not in _MODELS:
        require("torch", "the torch backend")
        from sed_deploy.model import RandomWeightsWarning, build_sed
        from sed_deploy.model.text import text_weights_digest

        checkpoint = manifest.weights.get("path") if manifest.weights.get("weights") == "checkpoint" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RandomWeightsWarning)
            model = build_sed(manifest.backbone, checkpoint=checkpoint, seed=manifest.weights.get("seed", 0),
                              attention_pooling=manifest.config.get("attention_pooling", 1))
        if text_weights_digest(model) != manifest.text["weights_digest"]:
            raise BackendError("the torch backend rebuilt weights that differ from the exported ones "
                               "(checkpoint file changed?); re-export the artifacts")
        _MODELS[key] = model.to(device)
    return _MODELS[key]


class TorchBackend(StageBackend):
    """A stage as its PyTorch module (`sed_deploy.export.stages`)."""

    name = "torch"
    Options = TorchOptions
    options: TorchOptions  # made by the base class from whatever options were given

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions) -> None:
        super().__init__(spec, folder, manifest, options)
        self.device = self.options.device
        self.threads = self.options.threads
        self.module = None

    def _load(self) -> None:
        if self.options.precision not in (None, "fp32"):
            raise BackendError(f"the torch backend runs the fp32 stage modules only, not {self.options.precision}; "
                               "use --backend ort or tensorrt for reduced-precision graphs")
        torch = require("torch", "the torch backend")
        if self.threads:
            torch.set_num_threads(self.threads)
        from .stages import build_stages

        model = shared_model(self.manifest, self.device)
        self.module = build_stages(model, self.manifest.topk)[self.spec.name]

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = require("torch")
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])).to(self.device) for t in self.spec.inputs]
        with torch.inference_mode():
            outputs = self.module(*args)
        return {t.name: o.cpu().numpy() for t, o in zip(self.spec.outputs, outputs, strict=True)}

    def _close(self) -> None:
        self.module = None
