"""A strict fake of `triton_python_backend_utils`, the part a BLS model uses, for tests without Triton.

The API follows python_backend's documentation (r24.x): `Tensor(name, ndarray)` with `name()`,
`as_numpy()`, `is_cpu()`, `to_dlpack()`; `InferenceRequest(model_name=, requested_output_names=,
inputs=, ...)` with `exec()`; `InferenceResponse(output_tensors=, error=)` with `output_tensors()`,
`has_error()`, `error()`; `TritonError(message, code)` and its codes; `get_input_tensor_by_name`,
`get_output_tensor_by_name`. Strict: wrong argument types, unknown keyword arguments, BYTES as
numpy strings instead of objects are refused as the real module refuses them.

`exec()` goes to `SERVER`: each stage model is its parsed config.pbtxt plus a function; the request
is checked against the config as Triton checks it (known inputs, data types, ranks, static
dimensions, required inputs, known outputs) before the function runs, and the function's outputs
are checked against the config too.
"""

from __future__ import annotations

import numpy as np

NUMPY_OF = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT32": np.int32, "TYPE_INT64": np.int64,
            "TYPE_UINT8": np.uint8, "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_}


class TritonModelException(Exception):
    pass


class TritonError:
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS, CANCELLED = range(8)

    def __init__(self, message, code=1):
        if not isinstance(message, str):
            raise TypeError("TritonError(): message must be str")
        if code not in range(8):
            raise TypeError(f"TritonError(): unknown code {code!r}")
        self._message, self._code = message, code

    def message(self):
        return self._message

    def code(self):
        return self._code


class Tensor:
    def __init__(self, name, array):
        if not isinstance(name, str):
            raise TypeError("Tensor(): name must be str")
        if not isinstance(array, np.ndarray):
            raise TypeError(f"Tensor({name}): expected a numpy.ndarray, got {type(array).__name__}")
        if array.dtype.kind in "US":
            raise TypeError(f"Tensor({name}): BYTES must be an object array of bytes, not {array.dtype}")
        self._name, self._array = name, array

    def name(self):
        return self._name

    def as_numpy(self):
        return self._array

    def is_cpu(self):
        return True

    def to_dlpack(self):
        return self._array.__dlpack__()


class InferenceResponse:
    def __init__(self, output_tensors=None, error=None):
        if error is not None and not isinstance(error, TritonError):
            raise TypeError("InferenceResponse(): error must be a TritonError")
        if not all(isinstance(t, Tensor) for t in output_tensors or []):
            raise TypeError("InferenceResponse(): output_tensors must be Tensor objects")
        self._tensors, self._error = list(output_tensors or []), error

    def output_tensors(self):
        return self._tensors

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


class InferenceRequest:
    def __init__(self, model_name, requested_output_names, inputs, request_id="", correlation_id=0,
                 model_version=-1, flags=0, timeout=0, preferred_memory=None, parameters=None):
        if not isinstance(model_name, str) or not all(isinstance(n, str) for n in requested_output_names):
            raise TypeError("InferenceRequest(): model_name and requested_output_names must be str")
        if not all(isinstance(t, Tensor) for t in inputs):
            raise TypeError("InferenceRequest(): inputs must be Tensor objects")
        self.model_name = model_name
        self._outputs, self._inputs = list(requested_output_names), list(inputs)

    def inputs(self):
        return self._inputs

    def requested_output_names(self):
        return self._outputs

    def exec(self, decoupled=False):
        return SERVER.infer(self)


def get_input_tensor_by_name(request, name):
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response, name):
    return next((t for t in response.output_tensors() if t.name() == name), None)


def _mismatch(config, name, array, spec) -> str | None:
    from tritonclient.grpc import model_config_pb2 as mc

    want = NUMPY_OF[mc.DataType.Name(spec.data_type)]
    if array.dtype != want:
        return f"'{name}' data-type is {array.dtype}, but model '{config.name}' expects {np.dtype(want)}"
    dims = list(spec.dims)
    if len(array.shape) != len(dims) or any(d != -1 and d != s for d, s in zip(dims, array.shape, strict=True)):
        return f"unexpected shape for '{name}' of model '{config.name}': expected {dims}, got {list(array.shape)}"
    return None


class FakeServer:
    """Stage models by name: (parsed ModelConfig, function of {input: array} -> {output: array})."""

    def __init__(self):
        self.models, self.calls = {}, []

    def register(self, config, function):
        self.models[config.name] = (config, function)

    def infer(self, request):
        if request.model_name not in self.models:
            return InferenceResponse(error=TritonError(f"unknown model '{request.model_name}'", TritonError.NOT_FOUND))
        config, function = self.models[request.model_name]
        assert config.max_batch_size == 0, "the stage models have no Triton batching"
        specs = {i.name: i for i in config.input}
        given = {t.name(): t.as_numpy() for t in request.inputs()}
        problems = [f"unexpected input '{n}'" for n in given if n not in specs]
        problems += [p for n, a in given.items() if n in specs and (p := _mismatch(config, n, a, specs[n]))]
        problems += [f"missing required input '{n}'" for n, s in specs.items() if n not in given and not s.optional]
        outputs = {o.name: o for o in config.output}
        problems += [f"unexpected output '{n}'" for n in request.requested_output_names() if n not in outputs]
        if problems:
            return InferenceResponse(error=TritonError("; ".join(problems), TritonError.INVALID_ARG))
        self.calls.append((config.name, {n: a.shape for n, a in given.items()}))
        results = function(given)
        tensors = []
        for name in request.requested_output_names():
            problem = _mismatch(config, name, results[name], outputs[name])
            assert problem is None, f"the fake stage broke its own config: {problem}"
            tensors.append(Tensor(name, results[name]))
        return InferenceResponse(output_tensors=tensors)


SERVER = FakeServer()
