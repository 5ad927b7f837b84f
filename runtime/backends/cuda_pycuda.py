"""`CudaApi` on pycuda, for machines where it is built (JetPack users compile it on the device).

pycuda keeps a context stack per thread and aborts the interpreter when a thread ends with a
non-empty stack ("PyCUDA ERROR: The context stack was not empty upon module cleanup"). So the
device's primary context is retained once (never `pycuda.autoinit`, which makes a context of its
own) and pushed only around each operation, popped in a `finally`: nothing is left on any stack
whatever fails, and any thread may call, since each operation makes the context current on the
calling thread first. Allocations are freed explicitly inside the same scope (pycuda frees an
allocation made on another thread only while its context is current there).

CUDA graph capture is not offered on this layer (`supports_graphs` False): use cuda-python for it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from sed_deploy.core.optional import require

from .cuda_api import CudaApi, CudaError, DeviceMemoryError


class PycudaApi(CudaApi):
    """See the module docstring."""

    name = "pycuda"

    def __init__(self, index: int = 0) -> None:
        self.cuda = require("pycuda.driver", "the tensorrt backend's device memory (pycuda)")
        try:
            self.cuda.init()
            self.context = self.cuda.Device(index).retain_primary_context()
        except self.cuda.Error as exc:
            raise CudaError(f"pycuda could not open CUDA device {index}: {exc}") from None
        self.index = index
        self._lock = threading.Lock()
        self._device: dict[int, Any] = {}  # pointer -> pycuda DeviceAllocation
        self._host: dict[int, Any] = {}  # pointer -> page-locked array (its base owns the memory)

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        self.context.push()
        try:
            yield
        finally:
            self.cuda.Context.pop()

    @contextlib.contextmanager
    def _call(self, what: str) -> Iterator[None]:
        with self.activate():
            try:
                yield
            except self.cuda.MemoryError:
                raise DeviceMemoryError(f"out of GPU memory in {what}") from None
            except self.cuda.Error as exc:
                raise CudaError(f"CUDA call {what} failed (pycuda): {str(exc).splitlines()[0]}") from None

    # device -----------------------------------------------------------------------------------

    def device_count(self) -> int:
        return int(self.cuda.Device.count())

    def device_info(self, index: int = 0) -> tuple[str, str]:
        device = self.cuda.Device(index)
        major, minor = device.compute_capability()
        return device.name(), f"{major}.{minor}"

    def memory_info(self) -> tuple[int, int]:
        with self._call("mem_get_info"):
            free, total = self.cuda.mem_get_info()
        return int(free), int(total)

    # memory -----------------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        with self._call("mem_alloc"):
            allocation = self.cuda.mem_alloc(nbytes)
        with self._lock:
            self._device[int(allocation)] = allocation
        return int(allocation)

    def free(self, pointer: int) -> None:
        with self._lock:
            allocation = self._device.pop(pointer, None)
        if allocation is not None:
            with self._call("free"):
                allocation.free()

    def malloc_host(self, nbytes: int) -> int:
        with self._call("pagelocked_empty"):
            array = self.cuda.pagelocked_empty(nbytes, np.uint8)
        pointer = int(array.ctypes.data)
        with self._lock:
            self._host[pointer] = array
        return pointer

    def free_host(self, pointer: int) -> None:
        with self._lock:
            array = self._host.pop(pointer, None)
        if array is not None:
            with self._call("free (page-locked)"):
                array.base.free()

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        with self._call("memcpy_htod_async"):
            self.cuda.memcpy_htod_async(pointer, host, stream)

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        with self._call("memcpy_dtoh_async"):
            self.cuda.memcpy_dtoh_async(host, pointer, stream)

    # streams and events -----------------------------------------------------------------------

    def create_stream(self) -> Any:
        with self._call("Stream"):
            return self.cuda.Stream()

    def stream_handle(self, stream: Any) -> int:
        return int(stream.handle)

    def destroy_stream(self, stream: Any) -> None:
        self.synchronize(stream)  # pycuda destroys it when the object goes

    def synchronize(self, stream: Any) -> None:
        with self._call("Stream.synchronize"):
            stream.synchronize()

    def create_event(self) -> Any:
        with self._call("Event"):
            return self.cuda.Event()

    def record_event(self, event: Any, stream: Any) -> None:
        with self._call("Event.record"):
            event.record(stream)

    def elapsed_ms(self, start: Any, end: Any) -> float:
        with self._call("Event.time_since"):
            end.synchronize()
            return float(end.time_since(start))

    def destroy_event(self, event: Any) -> None:
        pass  # pycuda destroys it when the object goes
