"""Three fixes to the code PyTriton 0.7.0 runs inside Triton's Python-backend stubs.

PyTriton ships its stub-side proxy (`pytriton/proxy/*.py`) to the server as file contents when a
model is loaded (`Model.get_proxy_model_files`); these fixes edit those contents on the way, in
memory, never the installed package. Each edit replaces an exact piece of 0.7.0's code and fails
loudly (`InternalError`) if that piece is not there, so a PyTriton upgrade cannot silently drop one.

1. **Start race with several instances.** Instances 1..N-1 wait only 1 s for instance 0's
   handshake socket (`communication.get_config_from_handshake_server`), which instance 0 creates
   after starting its tensor-store process: on a busy machine the model then fails to load. The
   wait becomes `HANDSHAKE_TIMEOUT_S`.
2. **One-line errors for refused requests.** PyTriton turns any exception of an inference
   function into a `TritonModelException` holding two formatted tracebacks (HTTP 500, 20-40
   lines). A refused request carries `REFUSED_MARK` in its message; the stub now answers such a
   request with `InferenceResponse(error=TritonError(<the line after the mark>, INVALID_ARG))`,
   which Triton sends as HTTP 400 (gRPC INVALID_ARGUMENT) with exactly that line. Any other
   exception keeps PyTriton's behaviour.
3. **Empty tensors.** A request with a zero-sized input (e.g. `classes` of shape [0]) crashes
   PyTriton's serializer in the stub (`np.nditer` refuses empty operands): HTTP 500 and a
   traceback. The stub now refuses it first, with one line and INVALID_ARG. (Without dynamic
   batching Triton gives the stub one request per call, so this refuses only that request.)
"""

from __future__ import annotations

import re

from sed_deploy.core.errors import InternalError
from sed_deploy.core.optional import require

PYTRITON_VERSION = "0.7.0"
HANDSHAKE_TIMEOUT_S = 120.0
# starts the message of an exception that refuses a request; nothing else prints it
REFUSED_MARK = "sed-serve refused the request: "

_HANDSHAKE_OLD = b"def get_config_from_handshake_server(socket_path: pathlib.Path, timeout_s: float = 1.0)"
_ERROR_OLD = b"""                if error:
                    assert eos
                    triton_responses_or_error = pb_utils.TritonModelException(  # pytype: disable=module-attr
                        responses_payload.decode("utf-8")
                    )
"""
_ERROR_NEW = b"""                if error:
                    assert eos
                    triton_responses_or_error = _sed_refusal_or_exception(
                        responses_payload.decode("utf-8"), len(triton_requests)
                    )
"""
_EXECUTE_OLD = b"""        try:
            spans = self._tracable_model.start_requests_spans(triton_requests)
"""
_EXECUTE_NEW = b"""        refused = _sed_refuse_empty_inputs(triton_requests)
        if refused is not None:
            return refused
        try:
            spans = self._tracable_model.start_requests_spans(triton_requests)
"""
_ERROR_FUNCTION = """

def _sed_refusal_or_exception(text, count):
    # added by sed_deploy.serve.pytriton_patches: a refused request gets one line and HTTP 400
    found = re.findall(MARK_PATTERN, text)
    if not found:
        return pb_utils.TritonModelException(text)
    error = pb_utils.TritonError(found[-1].strip(), pb_utils.TritonError.INVALID_ARG)
    return [pb_utils.InferenceResponse(error=error) for _ in range(count)]


def _sed_refuse_empty_inputs(requests):
    # added by sed_deploy.serve.pytriton_patches: PyTriton cannot serialize zero-sized tensors
    for request in requests:
        for tensor in request.inputs():
            shape = tensor.as_numpy().shape
            if 0 in shape:
                message = (f"{tensor.name()}: empty (shape {list(shape)}); send at least one element, "
                           "or leave an optional input out")
                error = pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG)
                return [pb_utils.InferenceResponse(error=error) for _ in requests]
    return None
"""


def _replace(files: dict[str, bytes], key: str, old: bytes, new: bytes) -> None:
    if files.get(key, b"").count(old) != 1:
        raise InternalError(f"PyTriton's {key} is not the code sed-serve patches (needs nvidia-pytriton=="
                            f"{PYTRITON_VERSION}); reinstall it with: pip install 'sed-deploy[serve]'")
    files[key] = files[key].replace(old, new, 1)


def patch_proxy_files(files: dict[str, bytes], version: int) -> dict[str, bytes]:
    """The proxy files of a model with the fixes applied (keys 'file:<version>/<name>')."""
    files = dict(files)
    _replace(files, f"file:{version}/communication.py", _HANDSHAKE_OLD,
             _HANDSHAKE_OLD.replace(b"1.0)", f"{HANDSHAKE_TIMEOUT_S})".encode()))
    model = f"file:{version}/model.py"
    _replace(files, model, _ERROR_OLD, _ERROR_NEW)
    _replace(files, model, _EXECUTE_OLD, _EXECUTE_NEW)
    pattern = repr(re.escape(REFUSED_MARK) + r"(.*)")
    function = _ERROR_FUNCTION.replace("MARK_PATTERN", pattern)
    _replace(files, model, b"\nimport traceback\n", b"\nimport re\nimport traceback\n")
    files[model] += function.encode()
    return files


def install() -> None:
    """Make PyTriton ship the patched proxy files from now on (idempotent)."""
    model_module = require("pytriton.models.model", "sed-serve")
    model_class = model_module.Model
    original = model_class.get_proxy_model_files
    if getattr(original, "sed_patched", False):
        return

    def get_proxy_model_files(self):
        return patch_proxy_files(original(self), self.model_version)

    get_proxy_model_files.sed_patched = True  # type: ignore[attr-defined]
    get_proxy_model_files.sed_original = original  # type: ignore[attr-defined]
    model_class.get_proxy_model_files = get_proxy_model_files
