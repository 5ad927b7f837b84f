"""Stage backend on TensorRT engines built by `sed-build` (no torch).

One engine per stage, deserialised once. An execution context is made for an optimization profile
when that profile is first used (one context per profile: they never run at once), with
user-managed device memory: the pipeline's stages run one after another on one stream, so they share
one scratch area (`CudaSession.scratch`), grown to the largest profile used so far. Memory follows
the class counts actually seen, not the largest profile an engine was built for.

Outputs stay on the GPU as `DeviceArray`s that later stages take as inputs; only what the host asks
for through `to_host` (the top-k maps and the final logits) is copied back, through pinned buffers.
`to_device` uploads a tensor that stays (the text embeddings, once per vocabulary); the image and
`keep` go up per call. Device buffers are allocated once per tensor and grown only when a larger
class count arrives.

Options (`BackendOptions`): `cuda_graphs` replays a captured CUDA graph whenever a stage runs again
with the same profile, shapes and addresses (the image encoder on every image; the cost stage for a
fixed vocabulary; a decoder when its kept-class count repeats), at most `MAX_GRAPHS` per stage;
`gpu_timing` reports stage times from CUDA events on the stream instead of the host clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.errors import SedDeployError, first_line
from sed_deploy.core.manifest import Manifest, StageSpec
from sed_deploy.core.optional import available
from sed_deploy.core.tensorrt_api import capturing_logger, require_tensorrt

from ..engine_cache import EngineRecord, Environment, choose_engines, select_profile
from .base import BackendError, StageBackend
from .cuda_memory import CudaSession, DeviceArray, DeviceBuffer, cuda_api, layer_available
from .options import BackendOptions, OrtOptions, TensorrtOptions

if TYPE_CHECKING:
    import tensorrt as trt

MAX_GRAPHS = 8  # captured CUDA graphs kept per stage (one per shape and address set)

__all__ = ["CudaSession", "DeviceArray", "TensorrtBackend", "current_environment", "engines_unavailable_reason"]


def current_environment() -> Environment:
    """The installed TensorRT and the GPU it would run on."""
    trt = require_tensorrt()
    name, capability = cuda_api().device_info(0)
    return Environment(tensorrt=str(trt.__version__), gpu=name, compute_capability=capability)


def engines_unavailable_reason(manifest: Manifest, folder: str | Path, precision: str | None = None) -> str | None:
    """Why the tensorrt backend cannot run these artifacts here (None if it can)."""
    if not available("tensorrt"):
        return "tensorrt is not installed"
    if layer_available() is None:
        return "no CUDA memory layer: pip install 'sed-deploy[trt]' (cuda-python's bindings), or build pycuda"
    try:
        environment = current_environment()
    except SedDeployError as exc:
        return first_line(exc)
    except Exception as exc:  # no driver, no device
        return f"no usable CUDA GPU ({first_line(exc)})"
    chosen, refused = choose_engines(manifest, folder, environment, precision)
    missing = [s for s in IMAGE_STAGES if s not in chosen]
    if missing:
        why = f"; refused: {refused[0]}" if refused else ""
        return f"no engine for {', '.join(missing)} here: run sed-build {folder}{why}"
    return None


class _OrtFallback(StageBackend):
    """The text stage on onnxruntime when it has no engine; created only when first used."""

    name = "ort"
    Options = OrtOptions

    def _load(self) -> None:
        from sed_deploy.core.errors import MissingDependencyError

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

    def describe(self) -> str:
        return "ort fp32 (no TensorRT engine for this stage)"


class TensorrtBackend(StageBackend):
    """A stage as a TensorRT engine (see the module docstring)."""

    name = "tensorrt"
    Options = TensorrtOptions
    options: TensorrtOptions  # made by the base class from whatever options were given
    serial_runs = True

    def __init__(self, spec: StageSpec, folder: str | Path, manifest: Manifest, options: BackendOptions,
                 record: EngineRecord | None = None, shared: CudaSession | None = None) -> None:
        super().__init__(spec, folder, manifest, options)
        if record is None:
            raise BackendError(f"stage {spec.name}: no TensorRT engine; run sed-build {folder}")
        self.record = record
        self.shared = shared or CudaSession()
        self.engine: trt.ICudaEngine | None = None
        self.contexts: dict[int, trt.IExecutionContext] = {}
        self.bound_memory: dict[int, tuple[int, int]] = {}
        self.buffers: dict[str, DeviceBuffer] = {}
        self.outputs: list[str] = []
        self.dtypes: dict[str, np.dtype] = {}
        self.graphs: OrderedDict[tuple, Any] = OrderedDict()
        self.device_seconds: float | None = None

    @classmethod
    def for_artifacts(cls, manifest: Manifest, folder: str | Path, options: BackendOptions) -> dict[str, StageBackend]:
        reason = engines_unavailable_reason(manifest, folder, options.precision)
        if reason is not None:
            raise BackendError(f"the tensorrt backend cannot run {folder}: {reason}")
        chosen, _ = choose_engines(manifest, folder, current_environment(), options.precision)
        shared = CudaSession()
        backends: dict[str, StageBackend] = {}
        for name, spec in manifest.stages.items():
            if name in chosen:
                backends[name] = cls(spec, folder, manifest, options, chosen[name], shared)
            else:  # text encoder without an engine: encode vocabularies on onnxruntime, if installed
                backends[name] = _OrtFallback(spec, folder, manifest, OrtOptions(threads=options.threads))
        return backends

    def describe(self) -> str:
        computes = self.record.computes or self.record.precision
        extra = f", DLA core {self.record.dla_core}" if self.record.dla_core is not None else ""
        return f"tensorrt {computes} ({Path(self.record.file).name}{extra})"

    # loading ----------------------------------------------------------------------------------

    def _load(self) -> None:
        trt = require_tensorrt()
        session = self.shared.acquire()
        try:
            with session.api.activate():
                self._deserialize(trt)
        except BaseException:
            self.shared.release()
            raise

    def _deserialize(self, trt: Any) -> None:
        if self.record.plugins:
            from sed_deploy.kernels.trt_plugin import register_plugin

            register_plugin()
        if self.options.cuda_graphs and not self.shared.api.supports_graphs:
            raise BackendError(f"CUDA graphs need the cuda-python memory layer, this is {self.shared.api.name}: "
                               "pip install 'sed-deploy[trt]' and unset SED_DEPLOY_CUDA")
        path = self.folder / self.record.file
        logger = capturing_logger(trt)
        runtime = trt.Runtime(logger)
        if self.record.dla_core is not None:
            runtime.DLA_core = self.record.dla_core
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"stage {self.spec.name}: TensorRT could not deserialise {path.name}: "
                               f"{logger.reason()}; rebuild it with sed-build {self.folder}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n))) for n in names}
        self.engine, self.logger = engine, logger

    def _context(self, profile: int) -> Any:
        """The execution context of `profile`, made and switched to that profile on first use."""
        context = self.contexts.get(profile)
        if context is None:
            import tensorrt as trt

            assert self.engine is not None
            context = self.engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            if context is None:
                raise BackendError(f"stage {self.spec.name}: TensorRT could not make an execution context: "
                                   f"{self.logger.reason()}")
            if self.record.plan:  # R4: select the profile before any shape is set
                context.set_optimization_profile_async(profile, self.shared.stream_handle)
                self.shared.synchronize()
            self.contexts[profile] = context
        return context

    def _bind_scratch(self, profile: int, context: Any) -> None:
        """Point the context at the shared scratch area, grown to this profile's need if smaller."""
        assert self.engine is not None and self.shared.scratch is not None
        size = int(self.engine.get_device_memory_size_for_profile_v2(profile))
        pointer = self.shared.scratch.ensure(size) if size else 0
        bound = (pointer, self.shared.scratch.capacity)
        if self.bound_memory.get(profile) != bound:
            context.set_device_memory(pointer, bound[1])
            self.bound_memory[profile] = bound

    # running ----------------------------------------------------------------------------------

    def _run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        shapes = {name: tuple(int(d) for d in value.shape) for name, value in feeds.items()}
        try:
            profile = select_profile(self.record.plan, shapes) if self.record.plan else 0
        except ValueError:
            raise BackendError(f"stage {self.spec.name}: the engine's profiles do not cover {shapes}; rebuild "
                               "with sed-build --max-classes N for more classes") from None
        with self.shared.lock, self.shared.api.activate():
            if self.options.gpu_timing:
                self.shared.start_timer()
            context = self._context(profile)
            addresses = []
            for name, value in feeds.items():
                if not context.set_input_shape(name, shapes[name]):
                    raise BackendError(f"stage {self.spec.name}: TensorRT refused shape {list(shapes[name])} for "
                                       f"{name}: {self.logger.reason()}")
                pointer = self._device_pointer(name, value)
                context.set_tensor_address(name, pointer)
                addresses.append(pointer)
            outputs = {}
            for name in self.outputs:
                shape = tuple(int(d) for d in context.get_tensor_shape(name))
                buffer = self._buffer(name)
                version = buffer.claim(int(np.prod(shape, dtype=np.int64)) * self.dtypes[name].itemsize)
                context.set_tensor_address(name, buffer.pointer)
                addresses.append(buffer.pointer)
                outputs[name] = DeviceArray(buffer, version, shape, self.dtypes[name])
            self._bind_scratch(profile, context)
            key = (profile, tuple(sorted(shapes.items())), tuple(addresses), self.bound_memory[profile])
            self._execute(context, key)
            self.device_seconds = self.shared.stop_timer() if self.options.gpu_timing else None
            self.shared.synchronize()
        return outputs

    def _execute(self, context: Any, key: tuple) -> None:
        stream = self.shared.stream
        if self.options.cuda_graphs:
            graph = self.graphs.get(key)
            if graph is None:
                graph = self._capture(context, stream)
            if graph is not None:
                self.graphs[key] = graph
                self.graphs.move_to_end(key)
                self.shared.api.launch_graph(graph, stream)
                return
        if not context.execute_async_v3(self.shared.stream_handle):
            raise BackendError(f"stage {self.spec.name}: TensorRT execution failed: {self.logger.reason()}")

    def _capture(self, context: Any, stream: Any) -> Any | None:
        """Run once uncaptured (TensorRT's deferred updates must not land in the graph), then capture."""
        if not context.execute_async_v3(self.shared.stream_handle):
            raise BackendError(f"stage {self.spec.name}: TensorRT execution failed: {self.logger.reason()}")
        self.shared.synchronize()
        graph = self.shared.api.capture_graph(stream, lambda: context.execute_async_v3(self.shared.stream_handle))
        if graph is not None:
            self.shared.keep_graph(graph)
            while len(self.graphs) >= MAX_GRAPHS:
                self.shared.drop_graph(self.graphs.popitem(last=False)[1])
        return graph

    def _buffer(self, name: str) -> DeviceBuffer:
        if name not in self.buffers:
            self.buffers[name] = self.shared.device_buffer(f"{self.spec.name}/{name}")
        return self.buffers[name]

    def _device_pointer(self, name: str, value: Any) -> int:
        """A device input as is; a host array copied up through a pinned buffer."""
        if isinstance(value, DeviceArray):
            return value.pointer
        host = np.ascontiguousarray(value, dtype=self.dtypes[name])
        staged = self.shared.pinned_buffer(f"in:{self.spec.name}:{name}").view(host.shape, host.dtype)
        staged[...] = host
        buffer = self._buffer(name)
        buffer.claim(host.nbytes)
        self.shared.api.copy_to_device(buffer.pointer, staged, self.shared.stream)
        return buffer.pointer

    def to_device(self, name: str, value: Any) -> Any:
        """`value` uploaded into a buffer of its own that stays until the next upload under `name`."""
        if isinstance(value, DeviceArray):
            return value
        host = np.ascontiguousarray(value, dtype=self.dtypes.get(name, np.asarray(value).dtype))
        with self.shared.lock, self.shared.api.activate():
            staged = self.shared.pinned_buffer(f"const:{self.spec.name}:{name}").view(host.shape, host.dtype)
            staged[...] = host
            buffer = self._buffer(f"const:{name}")
            version = buffer.claim(host.nbytes)
            self.shared.api.copy_to_device(buffer.pointer, staged, self.shared.stream)
            self.shared.synchronize()
        return DeviceArray(buffer, version, host.shape, host.dtype)

    def to_host(self, value: Any) -> np.ndarray:
        if not isinstance(value, DeviceArray):
            return np.asarray(value)
        with self.shared.lock, self.shared.api.activate():
            staged = self.shared.pinned_buffer(f"out:{self.spec.name}").view(value.shape, value.dtype)
            self.shared.api.copy_to_host(staged, value.pointer, self.shared.stream)
            self.shared.synchronize()
            return staged.copy()

    def _close(self) -> None:
        self.contexts, self.bound_memory, self.graphs = {}, {}, OrderedDict()
        self.engine = None
        self.buffers = {}
        self.shared.release()
