"""Stage backend on TensorRT engines built by `sed-build` (no torch).

One engine per stage, deserialised once; one execution context per optimization profile, the
profile chosen from the current class count. Every stage runs on one CUDA stream shared by the six
backends. Outputs stay on the GPU as `DeviceArray`s that later stages take as inputs; only what the
host asks for through `to_host` (the top-k maps and the final logits) is copied back, through pinned
buffers; `keep`, the image and the text embeddings go up the same way. Device buffers are allocated
once per tensor and grown only when a larger class count arrives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..engine_cache import EngineRecord, Environment, select_profile, usable_engines
from ..errors import first_line
from ..manifest import Manifest, StageSpec
from ..optional import available, require
from . import cuda_buffers
from .base import BackendError, BackendOptions, StageBackend

if TYPE_CHECKING:
    import tensorrt as trt


@dataclass(frozen=True)
class DeviceArray:
    """A tensor in device memory: what the TensorRT backend returns and accepts."""

    pointer: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def current_environment() -> Environment:
    """The installed TensorRT and the GPU it would run on."""
    require("tensorrt", "the tensorrt backend")
    import tensorrt as trt

    name, capability = cuda_buffers.device_info(0)
    return Environment(tensorrt=str(trt.__version__), gpu=name, compute_capability=capability)


def engines_unavailable_reason(manifest: Manifest, folder: str | Path, precision: str | None = None) -> str | None:
    """Why the tensorrt backend cannot run these artifacts here (None if it can)."""
    for module in ("tensorrt", "pycuda"):
        if not available(module):
            return f"{module} is not installed"
    try:
        environment = current_environment()
    except Exception as exc:  # no driver, no device
        return f"no usable CUDA GPU ({first_line(exc)})"
    chosen, refused = usable_engines(manifest, folder, environment, precision)
    image_stages = ("image_encoder", "cost", "decoder1", "decoder2", "decoder3")
    missing = [s for s in image_stages if s not in chosen]
    if missing:
        why = f"; refused: {refused[0]}" if refused else ""
        return f"no engine for {', '.join(missing)} here: run sed-build {folder}{why}"
    return None


def trt_dims(shape: tuple[int, ...]) -> Any:
    """A shape as TensorRT's Dims (the Python API also takes tuples; the stubs want Dims)."""
    import tensorrt as trt

    return trt.Dims(list(shape))


class CudaSession:
    """What the six stage backends of one pipeline share: the CUDA context, the stream, and the pinned
    host buffers that stage copies to and from the device."""

    def __init__(self) -> None:
        self.cuda: cuda_buffers.CudaContext | None = None
        self.users = 0
        self.pinned: dict[str, cuda_buffers.PinnedBuffer] = {}

    def acquire(self) -> cuda_buffers.CudaContext:
        if self.cuda is None:
            self.cuda = cuda_buffers.CudaContext(0)
        self.users += 1
        return self.cuda

    def release(self) -> None:
        self.users -= 1
        if self.users == 0 and self.cuda is not None:
            self.cuda.close()
            self.cuda = None

    def pinned_buffer(self, key: str) -> cuda_buffers.PinnedBuffer:
        return self.pinned.setdefault(key, cuda_buffers.PinnedBuffer())


class _OrtFallback(StageBackend):
    """The text stage on onnxruntime when it has no engine; created only when first used."""

    name = "ort"

    def _load(self) -> None:
        from ..errors import MissingDependencyError
        from .onnxruntime import OrtBackend

        try:
            self.inner = OrtBackend(self.spec, self.folder, self.manifest, self.options).load()
        except MissingDependencyError:
            raise BackendError(f"stage {self.spec.name} has no TensorRT engine and onnxruntime is not installed: "
                               f"run sed-build {self.folder} --stages {self.spec.name}, or pip install "
                               "'sed-deploy[ort]'") from None

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        return self.inner.run(feeds)

    def _close(self) -> None:
        self.inner.close()


class TensorrtBackend(StageBackend):
    """A stage as a TensorRT engine (see the module docstring)."""

    name = "tensorrt"

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions,
                 record: EngineRecord | None = None, shared: CudaSession | None = None) -> None:
        super().__init__(spec, folder, manifest, options)
        if record is None:
            raise BackendError(f"stage {spec.name}: no TensorRT engine; run sed-build {folder}")
        self.record = record
        self.shared = shared or CudaSession()
        self.engine: trt.ICudaEngine | None = None
        self.contexts: list[trt.IExecutionContext] = []
        self.buffers: dict[str, cuda_buffers.DeviceBuffer] = {}
        self.cuda: cuda_buffers.CudaContext | Any = None
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}

    @classmethod
    def for_artifacts(cls, manifest: Manifest, folder: str | Path, options: BackendOptions) -> dict[str, StageBackend]:
        reason = engines_unavailable_reason(manifest, folder, options.precision)
        if reason is not None:
            raise BackendError(f"the tensorrt backend cannot run {folder}: {reason}")
        chosen, _ = usable_engines(manifest, folder, current_environment(), options.precision)
        shared = CudaSession()
        backends: dict[str, StageBackend] = {}
        for name, spec in manifest.stages.items():
            if name in chosen:
                backends[name] = cls(spec, folder, manifest, options, chosen[name], shared)
            else:  # text encoder without an engine: encode vocabularies on onnxruntime, if installed
                backends[name] = _OrtFallback(spec, folder, manifest, BackendOptions(threads=options.threads))
        return backends

    # loading ----------------------------------------------------------------------------------

    def _load(self) -> None:
        require("tensorrt", "the tensorrt backend")
        import tensorrt as trt

        self.cuda = self.shared.acquire()
        if self.record.plugins:
            from sed_deploy.kernels.trt_plugin import register_plugin

            register_plugin()
        path = self.folder / self.record.file
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"stage {self.spec.name}: TensorRT could not deserialise {path} (built with "
                               f"another TensorRT or GPU?); rebuild it with sed-build {self.folder}")
        count = max(1, len(self.record.plan))
        strategy = getattr(trt.ExecutionContextAllocationStrategy, "USER_MANAGED", None) \
            if hasattr(trt, "ExecutionContextAllocationStrategy") else None
        if strategy is not None and hasattr(engine, "get_device_memory_size_for_profile_v2"):
            # one scratch area for this stage's contexts (one per profile): they never run at once, and
            # STATIC allocation would reserve the largest profile's scratch once per context
            size = max(engine.get_device_memory_size_for_profile_v2(k) for k in range(count))
            scratch = self._buffer("__scratch__").ensure(size)
            self.contexts = [engine.create_execution_context(strategy) for _ in range(count)]
            for context in self.contexts:
                context.set_device_memory(scratch, size)
        else:
            self.contexts = [engine.create_execution_context() for _ in range(count)]
        for index, context in enumerate(self.contexts):
            if self.record.plan:
                context.set_optimization_profile_async(index, self.cuda.stream_handle)
        self.cuda.synchronize()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.engine = engine

    # running ----------------------------------------------------------------------------------

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        shapes = {name: tuple(int(d) for d in value.shape) for name, value in feeds.items()}
        try:
            profile = select_profile(self.record.plan, shapes) if self.record.plan else 0
        except ValueError:
            raise BackendError(f"stage {self.spec.name}: the engine's profiles do not cover {shapes}; rebuild "
                               "with sed-build --max-classes N for more classes") from None
        context = self.contexts[profile]
        for name, value in feeds.items():
            if not context.set_input_shape(name, trt_dims(shapes[name])):
                raise BackendError(f"stage {self.spec.name}: TensorRT refused shape {list(shapes[name])} for {name}")
            context.set_tensor_address(name, self._device_pointer(name, value))
        outputs = {}
        for name in self.outputs:
            dims = context.get_tensor_shape(name)
            shape = tuple(int(dims[i]) for i in range(len(dims)))
            array = DeviceArray(0, shape, self.dtypes[name])
            pointer = self._buffer(name).ensure(array.nbytes)
            context.set_tensor_address(name, pointer)
            outputs[name] = DeviceArray(pointer, shape, self.dtypes[name])
        if not context.execute_async_v3(self.cuda.stream_handle):
            raise BackendError(f"stage {self.spec.name}: TensorRT execution failed (see the TensorRT log)")
        self.cuda.synchronize()
        return outputs

    def _buffer(self, name: str) -> cuda_buffers.DeviceBuffer:
        return self.buffers.setdefault(name, cuda_buffers.DeviceBuffer())

    def _device_pointer(self, name: str, value) -> int:
        """A device input as is; a host array copied up through a pinned buffer."""
        if isinstance(value, DeviceArray):
            return value.pointer
        host = np.ascontiguousarray(value, dtype=self.dtypes[name])
        staged = self.shared.pinned_buffer(f"in:{self.spec.name}:{name}").view(host.shape, host.dtype)
        staged[...] = host
        pointer = self._buffer(name).ensure(host.nbytes)
        cuda_buffers.copy_to_device(pointer, staged, self.cuda.stream)
        return pointer

    def to_host(self, value) -> np.ndarray:
        if not isinstance(value, DeviceArray):
            return np.asarray(value)
        staged = self.shared.pinned_buffer(f"out:{self.spec.name}").view(value.shape, value.dtype)
        cuda_buffers.copy_to_host(staged, value.pointer, self.cuda.stream)
        self.cuda.synchronize()
        return staged.copy()

    def _close(self) -> None:
        self.contexts = []
        self.engine = None
        self.buffers = {}
        self.shared.release()
        self.cuda = None
