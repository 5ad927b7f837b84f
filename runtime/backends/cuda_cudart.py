"""`CudaApi` on cuda-python's runtime bindings (`cuda.bindings.runtime`): wheels, no compiler.

The bindings link the CUDA runtime statically and load only the driver (`libcuda.so.1`), so a
machine needs the NVIDIA driver and nothing of the CUDA toolkit. Every call returns a tuple whose
first item is a `cudaError_t`; `_check` turns a failure into one line naming the call. The runtime
API makes the device's primary context current on each thread at its first call (and TensorRT uses
the same one), so nothing is pushed or popped, and any thread may call in.

Versions: cuda-bindings >= 12.6.1 has `cuda.bindings.runtime` (older cuda-python: `cuda.cudart`).
13.x needs a CUDA 13 driver (>= 580); JetPack 6 has a CUDA 12.6 driver, hence `cuda-bindings<13` in
the `trt` extra, and a clear error when a 13.x install meets an older driver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from sed_deploy.core.optional import require

from .cuda_api import CudaApi, CudaError, DeviceMemoryError

_ALLOCATION_ERRORS = ("cudaErrorMemoryAllocation",)


def _runtime() -> Any:
    try:
        return require("cuda.bindings.runtime", "the tensorrt backend's device memory")
    except Exception:
        return require("cuda.cudart", "the tensorrt backend's device memory")  # cuda-python < 12.6.1


class CudartApi(CudaApi):
    """See the module docstring."""

    name = "cuda-python"
    supports_graphs = True

    def __init__(self) -> None:
        self.rt = _runtime()
        count = self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if not count:
            raise CudaError("no CUDA GPU found (cudaGetDeviceCount returned 0)")
        self._check_driver()

    def _check(self, result: Any, call: str) -> Any:
        err, *rest = result
        if err != self.rt.cudaError_t.cudaSuccess:
            name = _error_name(self.rt, err)
            if name in _ALLOCATION_ERRORS:
                raise DeviceMemoryError(f"out of GPU memory in {call}")
            hint = "; is the NVIDIA driver installed?" if name in ("cudaErrorInsufficientDriver",
                                                                  "cudaErrorNoDevice") else ""
            raise CudaError(f"CUDA call {call} failed: {name}{hint}")
        return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)

    def _check_driver(self) -> None:
        """A runtime of a newer CUDA major than the driver cannot work (cuda-bindings 13 on JetPack 6's 12.6)."""
        driver = int(self._check(self.rt.cudaDriverGetVersion(), "cudaDriverGetVersion"))
        runtime = int(self._check(self.rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
        if runtime // 1000 > driver // 1000:
            major = runtime // 1000
            raise CudaError(f"cuda-bindings for CUDA {major} needs a CUDA {major} driver, this driver supports CUDA "
                            f"{driver // 1000}.{driver % 1000 // 10}: pip install 'cuda-bindings<{major}'")

    # device -----------------------------------------------------------------------------------

    def device_count(self) -> int:
        return int(self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def device_info(self, index: int = 0) -> tuple[str, str]:
        prop = self._check(self.rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
        return name, f"{prop.major}.{prop.minor}"

    def memory_info(self) -> tuple[int, int]:
        free, total = self._check(self.rt.cudaMemGetInfo(), "cudaMemGetInfo")
        return int(free), int(total)

    # memory -----------------------------------------------------------------------------------

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(nbytes), "cudaMalloc"))  # 256-byte aligned

    def free(self, pointer: int) -> None:
        self._check(self.rt.cudaFree(pointer), "cudaFree")

    def malloc_host(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMallocHost(nbytes), "cudaMallocHost"))

    def free_host(self, pointer: int) -> None:
        self._check(self.rt.cudaFreeHost(pointer), "cudaFreeHost")

    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self.rt.cudaMemcpyAsync(pointer, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync")

    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self.rt.cudaMemcpyAsync(host.ctypes.data, pointer, host.nbytes, kind, stream), "cudaMemcpyAsync")

    # streams and events -----------------------------------------------------------------------

    def create_stream(self) -> Any:
        # non-blocking: TensorRT warns that the default stream costs extra synchronisation
        return self._check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreate")

    def stream_handle(self, stream: Any) -> int:
        return _native_handle(stream)

    def destroy_stream(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def synchronize(self, stream: Any) -> None:
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def create_event(self) -> Any:
        return self._check(self.rt.cudaEventCreateWithFlags(self.rt.cudaEventDefault), "cudaEventCreate")  # timing on

    def record_event(self, event: Any, stream: Any) -> None:
        self._check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        self._check(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def destroy_event(self, event: Any) -> None:
        self._check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")

    # graphs -----------------------------------------------------------------------------------

    def capture_graph(self, stream: Any, enqueue: Callable[[], bool]) -> Any | None:
        """Capture `enqueue()` on `stream` (trtexec's pattern: the caller ran it once uncaptured first).

        Returns None when the work cannot be captured (the capture is always ended and the sticky
        error cleared, so the stream stays usable for a plain enqueue).
        """
        rt = self.rt
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self._check(rt.cudaStreamBeginCapture(stream, mode), "cudaStreamBeginCapture")
        try:
            enqueued = enqueue()
        finally:
            err, graph = rt.cudaStreamEndCapture(stream)
        if err != rt.cudaError_t.cudaSuccess or not enqueued:
            if err == rt.cudaError_t.cudaSuccess and graph is not None:
                rt.cudaGraphDestroy(graph)
            rt.cudaGetLastError()
            return None
        try:
            return self._check(rt.cudaGraphInstantiateWithFlags(graph, 0), "cudaGraphInstantiate")
        finally:
            rt.cudaGraphDestroy(graph)

    def launch_graph(self, graph: Any, stream: Any) -> None:
        self._check(self.rt.cudaGraphLaunch(graph, stream), "cudaGraphLaunch")

    def destroy_graph(self, graph: Any) -> None:
        self._check(self.rt.cudaGraphExecDestroy(graph), "cudaGraphExecDestroy")


def _error_name(rt: Any, err: Any) -> str:
    with contextlib.suppress(Exception):
        ok, name = rt.cudaGetErrorName(err)
        return name.decode() if isinstance(name, bytes) else str(name)
    return str(err)


def _native_handle(obj: Any) -> int:
    """A stream as the int TensorRT takes (`int()` of binding objects is deprecated in 13.x)."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(obj)
    return int(get_cuda_native_handle(obj))
