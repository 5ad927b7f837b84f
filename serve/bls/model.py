"""Triton Python-backend model `sed` of the repository `sed-serve --write-repository` writes.

It answers sed-serve's protocol inside NVIDIA's Triton container: each request goes through the
project's `RequestHandler` and `Pipeline`, whose stage backends are BLS requests to the stage
models of the same server (`sed_deploy.serve.bls_backend`). A refused request gets its one line
with INVALID_ARG (HTTP 400); a failed stage gets one line with INTERNAL; the other requests of the
same call are unaffected. The container's Python needs sed-deploy (`pip install 'sed-deploy[text]'`).
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils

from sed_deploy.core.errors import SedDeployError, first_line
from sed_deploy.core.manifest import Manifest
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.serve.bls_backend import BlsBackend
from sed_deploy.serve.handler import BadRequest, Limits, RequestHandler
from sed_deploy.serve.protocol import CLASSES, IMAGE, TOPK
from sed_deploy.serve.vocab_cache import VocabularyCache


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        folder = Path(args["model_repository"]) / args["model_version"] / "artifacts"
        manifest = Manifest.load(folder)
        backends = BlsBackend.for_manifest(manifest, folder, pb_utils)
        pipeline = Pipeline(manifest, folder, backends, BlsBackend.name,
                            int(parameters.get("topk", manifest.default_topk)),
                            cer=parameters.get("cer", "1") == "1", cache=VocabularyCache(),
                            max_pixels=int(parameters.get("max_pixels", Limits.max_pixels)))
        names = json.loads((folder / "vocabulary.json").read_text())
        limits = Limits(int(parameters.get("max_classes", Limits.max_classes)), pipeline.max_pixels)
        # the default vocabulary is encoded at the first request that uses it: no BLS in initialize
        self.handler = RequestHandler(pipeline, names, None, limits)

    def execute(self, requests):
        responses = []
        for request in requests:
            inputs = {}
            for name in (IMAGE, CLASSES, TOPK):
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    inputs[name] = tensor.as_numpy()
            try:
                outputs = self.handler(inputs)
            except BadRequest as exc:
                error = pb_utils.TritonError(str(exc), pb_utils.TritonError.INVALID_ARG)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            except SedDeployError as exc:  # a stage failed: one line, the next request may succeed
                error = pb_utils.TritonError(first_line(exc), pb_utils.TritonError.INTERNAL)
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(name, value) for name, value in outputs.items()]))
        return responses

    def finalize(self):
        self.handler.pipeline.close()
