"""Device memory for the TensorRT backend: one small interface, two implementations, chosen once.

`CudaApi` is everything the backend needs from CUDA: device buffers, pinned host buffers, one
stream, async copies, events, graph capture. Two implementations:

- `cuda_cudart.CudartApi` on cuda-python's runtime bindings (`cuda.bindings.runtime`, binary wheels
  for x86_64 and aarch64, no compiler, no CUDA toolkit: only the driver). The runtime API uses the
  device's primary context implicitly on every thread, so there is no context stack at all.
- `cuda_pycuda.PycudaApi` on pycuda, for JetPack users who build it. It retains the primary context
  and pushes it around each operation only, popped in a `finally`, so nothing stays on any thread's
  context stack whatever fails, and every thread may call it.

`cuda_api()` picks one: `SED_DEPLOY_CUDA=cuda-python` or `=pycuda` forces it; by default cuda-python
when importable, else pycuda. Both share the primary context with TensorRT, so pointers and stream
handles pass freely between them.

Above the interface: `DeviceBuffer` (grow-only; its `version` changes whenever it moves or is
rewritten, so a `DeviceArray` made from an older content refuses to be used instead of pointing into
freed memory), `PinnedBuffer` (page-locked staging), and `CudaSession`, what the stage backends of
one pipeline share: the stream, the staging buffers, one scratch area for the engines, events for
timing, a lock. Everything a session allocated is freed by `close()`, or by a finaliser when a
pipeline is never closed (at the latest at interpreter exit, while the CUDA layer still works).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from sed_deploy.core.errors import ConfigError, MissingDependencyError
from sed_deploy.core.optional import available

from .base import BackendError
from .cuda_api import CudaApi, DeviceMemoryError

ENV_VAR = "SED_DEPLOY_CUDA"
LAYERS = ("cuda-python", "pycuda")  # auto-detection order


_API: dict[str, CudaApi] = {}
_API_LOCK = threading.Lock()


def layer_choice() -> tuple[str, ...]:
    """The layers to try, in order: the one `SED_DEPLOY_CUDA` names, or `LAYERS`."""
    forced = os.environ.get(ENV_VAR, "").strip().lower()
    if forced in ("", "auto"):
        return LAYERS
    if forced not in LAYERS:
        raise ConfigError(f"{ENV_VAR} must be one of auto, {', '.join(LAYERS)}, got {forced!r}")
    return (forced,)


def layer_available() -> str | None:
    """The CUDA memory layer that would be used (without touching the GPU), or None."""
    modules = {"cuda-python": "cuda.bindings", "pycuda": "pycuda.driver"}
    return next((name for name in layer_choice() if available(modules[name])), None)


def cuda_api() -> CudaApi:
    """The process's CUDA layer (created once; see the module docstring for the choice)."""
    with _API_LOCK:
        name = layer_available()
        if name is None:
            raise MissingDependencyError(
                "no CUDA memory layer for the tensorrt backend: install cuda-python's bindings with pip install "
                "'sed-deploy[trt]' (no compiler needed), or build pycuda (JetPack)")
        if name not in _API:
            if name == "cuda-python":
                from .cuda_cudart import CudartApi

                _API[name] = CudartApi()
            else:
                from .cuda_pycuda import PycudaApi

                _API[name] = PycudaApi()
        return _API[name]


def reset_cuda_api() -> None:
    """Forget the chosen layer (tests swap CUDA doubles in and out)."""
    with _API_LOCK:
        _API.clear()


def out_of_memory(api: CudaApi, nbytes: int, what: str) -> DeviceMemoryError:
    """The one-line error for a failed allocation, with the free and total memory when known."""
    try:
        free, total = api.memory_info()
        state = f"{free >> 20} MB of {total >> 20} MB free"
    except Exception:  # the device may be in no state to answer
        state = "free memory unknown"
    return DeviceMemoryError(f"out of GPU memory: {what} needs {max(nbytes >> 20, 1)} MB, {state}; build engines "
                             "for fewer classes (sed-build --max-classes) or close other GPU programs")


class DeviceBuffer:
    """A device allocation that grows (never shrinks) to the largest size asked for.

    `version` changes when the buffer moves (grows) and when a new writer claims it, so a
    `DeviceArray` made earlier can tell that its content is gone.
    """

    def __init__(self, api: CudaApi, label: str) -> None:
        self.api, self.label = api, label
        self.pointer, self.capacity, self.version = 0, 0, 0

    def ensure(self, nbytes: int) -> int:
        """The pointer of at least `nbytes` bytes (reallocated only to grow; the content is then lost)."""
        if nbytes > self.capacity or not self.pointer:
            self.free()
            try:
                self.pointer = self.api.malloc(max(nbytes, 1))
            except DeviceMemoryError:
                raise out_of_memory(self.api, nbytes, self.label) from None
            self.capacity = max(nbytes, 1)
        return self.pointer

    def claim(self, nbytes: int) -> int:
        """`ensure`, for a new content: returns the new version."""
        self.ensure(nbytes)
        self.version += 1
        return self.version

    def free(self) -> None:
        if self.pointer:
            pointer, self.pointer, self.capacity = self.pointer, 0, 0
            self.version += 1
            self.api.free(pointer)


@dataclass(frozen=True)
class DeviceArray:
    """A tensor in a `DeviceBuffer`: what the TensorRT backend returns and accepts.

    Valid until its buffer is rewritten (the next run of the stage that made it, or the next
    vocabulary for the uploaded text embeddings); using it later raises instead of reading
    memory that now holds something else or was freed.
    """

    buffer: DeviceBuffer
    version: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def pointer(self) -> int:
        if self.buffer.version != self.version or not self.buffer.pointer:
            raise BackendError(f"device tensor {self.buffer.label} was overwritten or freed since it was made "
                               "(outputs are valid until their stage runs again)")
        return self.buffer.pointer


class PinnedBuffer:
    """Page-locked host memory that grows to the largest size asked for, seen as numpy."""

    def __init__(self, api: CudaApi) -> None:
        self.api = api
        self.pointer, self.capacity = 0, 0

    def view(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if nbytes > self.capacity or not self.pointer:
            self.free()
            self.pointer = self.api.malloc_host(max(nbytes, 1))
            self.capacity = max(nbytes, 1)
        raw = (ctypes.c_ubyte * self.capacity).from_address(self.pointer)
        return np.ctypeslib.as_array(raw)[:nbytes].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.pointer:
            pointer, self.pointer, self.capacity = self.pointer, 0, 0
            self.api.free_host(pointer)


class _Owned:
    """What a session allocated, freed together (kept apart from the session so a finaliser can run it)."""

    def __init__(self, api: CudaApi) -> None:
        self.api = api
        self.stream: Any = None
        self.events: list[Any] = []
        self.graphs: list[Any] = []
        self.buffers: list[DeviceBuffer | PinnedBuffer] = []

    def release(self) -> None:
        with contextlib.suppress(Exception):
            if self.stream is not None:
                self.api.synchronize(self.stream)
        for graph in self.graphs:
            with contextlib.suppress(Exception):
                self.api.destroy_graph(graph)
        for buffer in self.buffers:
            with contextlib.suppress(Exception):
                buffer.free()
        for event in self.events:
            with contextlib.suppress(Exception):
                self.api.destroy_event(event)
        if self.stream is not None:
            with contextlib.suppress(Exception):
                self.api.destroy_stream(self.stream)
        self.stream, self.events, self.graphs, self.buffers = None, [], [], []


class CudaSession:
    """What the stage backends of one pipeline share (see the module docstring).

    Backends `acquire` it when they load and `release` it when they close; the last release frees
    everything. `lock` serialises stage runs: TensorRT execution contexts and the shared stream and
    scratch area are used by one thread at a time.
    """

    def __init__(self, api: CudaApi | None = None) -> None:
        self._api = api
        self.lock = threading.RLock()
        self.users = 0
        self._owned: _Owned | None = None
        self._finalizer: weakref.finalize | None = None
        self._pinned: dict[str, PinnedBuffer] = {}
        self.scratch: DeviceBuffer | None = None
        self._timing: tuple[Any, Any] | None = None

    @property
    def api(self) -> CudaApi:
        if self._owned is None:
            raise BackendError("the CUDA session is not open (load the backend first)")
        return self._owned.api

    def acquire(self) -> CudaSession:
        with self.lock:
            if self._owned is None:
                owned = _Owned(self._api or cuda_api())
                owned.stream = owned.api.create_stream()
                self._owned = owned
                self._finalizer = weakref.finalize(self, owned.release)
                self.scratch = self.device_buffer("TensorRT scratch memory")
            self.users += 1
            return self

    def release(self) -> None:
        with self.lock:
            self.users = max(0, self.users - 1)
            if self.users == 0:
                self.close()

    def close(self) -> None:
        """Free everything now (later `acquire` starts afresh)."""
        with self.lock:
            if self._finalizer is not None:
                self._finalizer()
            self._owned, self._finalizer, self._pinned, self.scratch, self._timing = None, None, {}, None, None
            self.users = 0

    @property
    def stream(self) -> Any:
        return self._require().stream

    @property
    def stream_handle(self) -> int:
        owned = self._require()
        return owned.api.stream_handle(owned.stream)

    def synchronize(self) -> None:
        owned = self._require()
        owned.api.synchronize(owned.stream)

    def device_buffer(self, label: str) -> DeviceBuffer:
        owned = self._require()
        buffer = DeviceBuffer(owned.api, label)
        owned.buffers.append(buffer)
        return buffer

    def pinned_buffer(self, key: str) -> PinnedBuffer:
        owned = self._require()
        if key not in self._pinned:
            self._pinned[key] = PinnedBuffer(owned.api)
            owned.buffers.append(self._pinned[key])
        return self._pinned[key]

    def keep_graph(self, graph: Any) -> None:
        self._require().graphs.append(graph)

    def drop_graph(self, graph: Any) -> None:
        owned = self._require()
        if graph in owned.graphs:
            owned.graphs.remove(graph)
            owned.api.destroy_graph(graph)

    def start_timer(self) -> None:
        """Record the start event of a CUDA-event timing on the stream."""
        owned = self._require()
        if self._timing is None:
            self._timing = (owned.api.create_event(), owned.api.create_event())
            owned.events.extend(self._timing)
        owned.api.record_event(self._timing[0], owned.stream)

    def stop_timer(self) -> float:
        """Seconds of GPU work on the stream since `start_timer` (waits for it)."""
        owned = self._require()
        if self._timing is None:
            raise BackendError("stop_timer() without start_timer()")
        owned.api.record_event(self._timing[1], owned.stream)
        return owned.api.elapsed_ms(*self._timing) / 1000.0

    def _require(self) -> _Owned:
        if self._owned is None:
            raise BackendError("the CUDA session is not open (load the backend first)")
        return self._owned
