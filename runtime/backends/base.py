"""The stage backend interface: load a stage, run it on named arrays, close it.

`StageBackend` checks state and feeds against the manifest (names, dtypes, ranks, static
dimensions) and times each run; a concrete backend implements only `_load`, `_run` and `_close`
(the template-method pattern of Polygraphy's runners).

Arrays are numpy arrays, or a backend's own array type for tensors that stay on its device (the
TensorRT backend keeps everything but the top-k maps and the final logits on the GPU): anything with
`.shape` and `.dtype` that the same backend accepts as a feed. `to_host` turns an output into numpy;
the pipeline calls it only for what it needs on the host.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sed_deploy.core.contract import TEXT_STAGE
from sed_deploy.core.errors import ConfigError, SedDeployError
from sed_deploy.core.manifest import Manifest, StageSpec

from .options import BackendOptions, options_for

# Runtime precisions: no graph of their own; the backends named here run the fp32 graphs at that
# precision (openvino: INFERENCE_PRECISION_HINT bf16); every other backend refuses them.
RUNTIME_PRECISIONS = {"bf16": ("openvino",)}


def graph_precision(precision: str | None) -> str | None:
    """The precision of the graph files `precision` reads: None (fp32) for a runtime precision."""
    return None if precision in RUNTIME_PRECISIONS else precision


def check_precision(backend: str, precision: str | None) -> None:
    """`ConfigError` unless `backend` can run `precision` (a runtime precision only where supported)."""
    supported = RUNTIME_PRECISIONS.get(precision or "fp32")
    if supported is not None and backend not in supported:
        raise ConfigError(f"the {backend} backend cannot run {precision}: {precision} is a runtime precision of "
                          f"{' and '.join(supported)} only; use --backend {supported[0]}, or --precision fp32")


class BackendError(SedDeployError):
    """A backend cannot load or run a stage, or was given the wrong inputs."""


class StageBackend:
    """One stage graph on one backend.

    Args:
        spec: the stage as the manifest describes it.
        folder: the artifacts folder the spec's file is relative to.
        manifest: the whole manifest (some backends need more than the stage).
        options: backend settings.
    """

    name = "base"
    Options: type[BackendOptions] = BackendOptions  # the settings this backend reads
    # True when outputs live in buffers the next run rewrites: the pipeline then runs one image at a time
    serial_runs = False

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions) -> None:
        self.spec = spec
        self.folder = Path(folder)
        self.manifest = manifest
        self.options = options_for(self.name, options, self.Options)
        self.loaded = False
        self.last_run_seconds = 0.0
        self.device_seconds: float | None = None  # set by backends that time on the device

    @classmethod
    def for_artifacts(cls, manifest: Manifest, folder: str | Path, options: BackendOptions) -> dict[str, StageBackend]:
        """One backend per stage of the manifest (a backend may share state between them).

        The text stage always gets fp32 options (see `manifest.IMAGE_STAGES`).
        """
        return {name: cls(spec, folder, manifest, options if name != TEXT_STAGE else replace(options, precision=None))
                for name, spec in manifest.stages.items()}

    # public interface -------------------------------------------------------------------------

    def load(self) -> StageBackend:
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """Run the stage: feeds keyed by input name -> outputs keyed by output name.

        Inputs and outputs are numpy arrays or this backend's device arrays (see `to_host`).
        """
        if not self.loaded:
            raise BackendError(f"stage {self.spec.name} on {self.name}: run() called before load()")
        self.check_feeds(feeds)
        start = time.perf_counter()
        outputs = self._run(feeds)
        host = time.perf_counter() - start
        self.last_run_seconds = self.device_seconds if self.device_seconds is not None else host
        return outputs

    def close(self) -> None:
        if self.loaded:
            self._close()
            self.loaded = False

    def __enter__(self) -> StageBackend:
        return self.load()

    def __exit__(self, *exc) -> None:
        self.close()

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Raise `BackendError` unless `feeds` match the stage's inputs."""
        expected = [t.name for t in self.spec.inputs]
        if sorted(feeds) != sorted(expected):
            raise BackendError(f"stage {self.spec.name}: expected inputs {expected}, got {sorted(feeds)}")
        for tensor in self.spec.inputs:
            array = feeds[tensor.name]
            where = f"stage {self.spec.name}, input {tensor.name}"
            dtype = getattr(array, "dtype", None)
            if dtype is None or not hasattr(array, "shape") or np.dtype(dtype) != np.dtype(tensor.dtype):
                got = dtype if dtype is not None else type(array).__name__
                raise BackendError(f"{where}: expected {tensor.dtype}, got {got}")
            if len(array.shape) != len(tensor.shape):
                raise BackendError(f"{where}: expected rank {len(tensor.shape)} {list(tensor.shape)}, "
                                   f"got shape {list(array.shape)}")
            for axis, (want, got) in enumerate(zip(tensor.shape, array.shape, strict=True)):
                if isinstance(want, int) and want != got:
                    raise BackendError(f"{where}: expected size {want} on axis {axis}, got shape {list(array.shape)}")
                if isinstance(want, str) and got < 1:
                    raise BackendError(f"{where}: dynamic axis {want} must not be empty, got shape {list(array.shape)}")

    @property
    def graph_path(self) -> Path:
        """The stage's graph file at the requested precision (the fp32 graph by default)."""
        return self.folder / self.spec.graph(graph_precision(self.options.precision))[0]

    def to_host(self, value) -> np.ndarray:
        """An output of this backend as a numpy array (a copy from the device where needed)."""
        return np.asarray(value)

    def to_device(self, name: str, value):
        """`value` (input `name`) where this backend keeps inputs that stay across runs (the text
        embeddings of a vocabulary): on the device for GPU backends, as is elsewhere."""
        return value

    def describe(self) -> str:
        """What runs this stage, for reports: "ort fp32", "tensorrt fp16 (cost.fp16.<key>.engine)"."""
        return f"{self.name} {self.options.precision or 'fp32'}"

    # what a backend implements ----------------------------------------------------------------

    def _load(self) -> None:
        raise NotImplementedError

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def _close(self) -> None:
        pass
