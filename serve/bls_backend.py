"""A stage backend whose stages are models of the same Triton server, called through BLS.

Inside NVIDIA's Triton container the model `sed` (`bls/model.py`) runs the project's `Pipeline`
with one `BlsBackend` per stage: a stage run is a BLS request (`pb_utils.InferenceRequest(...).exec()`)
to the stage's model, so the CER loop, pre- and post-processing exist once, in the runtime. Outputs
stay `pb_utils.Tensor` objects and go to the next stage as they are (on the GPU when the stage
model runs there); only what the pipeline asks for through `to_host` (the top-k maps, the final
logits, the text embeddings) is copied to numpy.

`triton_python_backend_utils` exists only inside Triton's Python-backend stub, so the module is
given to the backend (`pb_utils=`) instead of imported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import require
from sed_deploy.runtime.backends.base import BackendError, StageBackend
from sed_deploy.runtime.backends.options import BackendOptions


class BlsBackend(StageBackend):
    """One stage as a model of the serving Triton; `pb_utils` is `triton_python_backend_utils`."""

    name = "triton-bls"

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions,
                 pb_utils: Any) -> None:
        super().__init__(spec, folder, manifest, options)
        self.pb = pb_utils

    @classmethod
    def for_manifest(cls, manifest: Manifest, folder: str | Path, pb_utils: Any) -> dict[str, StageBackend]:
        return {name: cls(spec, folder, manifest, BackendOptions(), pb_utils) for name, spec in manifest.stages.items()}

    def check_feeds(self, feeds: Mapping[str, Any]) -> None:
        """Names only: Triton checks dtypes and shapes against the stage's config.pbtxt."""
        expected = [t.name for t in self.spec.inputs]
        if sorted(feeds) != sorted(expected):
            raise BackendError(f"stage {self.spec.name}: expected inputs {expected}, got {sorted(feeds)}")

    def _load(self) -> None:
        pass  # the stage model is loaded by Triton, and BLS is not allowed before the first request

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        inputs = [value if isinstance(value, self.pb.Tensor) else self.pb.Tensor(name, np.ascontiguousarray(value))
                  for name, value in feeds.items()]
        outputs = [t.name for t in self.spec.outputs]
        request = self.pb.InferenceRequest(model_name=self.spec.name, requested_output_names=outputs, inputs=inputs)
        response = request.exec()
        if response.has_error():
            raise BackendError(f"stage {self.spec.name}: {response.error().message()}")
        return {name: self.pb.get_output_tensor_by_name(response, name) for name in outputs}

    def to_host(self, value) -> np.ndarray:
        if isinstance(value, np.ndarray):
            return value
        if value.is_cpu():
            return value.as_numpy()
        cupy = require("cupy", "the sed model with stage models on the GPU (pip install cupy-cuda12x)")
        return cupy.asnumpy(cupy.from_dlpack(value.to_dlpack()))
