"""The CUDA operations the TensorRT backend uses, as one interface (`CudaApi`) and its errors.

`cuda_cudart.CudartApi` and `cuda_pycuda.PycudaApi` implement it; `cuda_memory` chooses one and
builds the buffers and the session above it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .base import BackendError


class CudaError(BackendError):
    """A CUDA call failed (no driver, no device, a bad call); one line naming the call and the error."""


class DeviceMemoryError(CudaError):
    """Out of GPU memory: what was being allocated, how much, and how much is free."""


class CudaApi:
    """The CUDA operations the TensorRT backend uses; every method is safe to call from any thread.

    Pointers are ints; streams, events and graphs are the implementation's own objects.
    """

    name = "base"
    supports_graphs = False

    def device_count(self) -> int: raise NotImplementedError
    def device_info(self, index: int = 0) -> tuple[str, str]: raise NotImplementedError  # (name, "major.minor")
    def memory_info(self) -> tuple[int, int]: raise NotImplementedError  # (free, total) bytes
    def malloc(self, nbytes: int) -> int: raise NotImplementedError
    def free(self, pointer: int) -> None: raise NotImplementedError
    def malloc_host(self, nbytes: int) -> int: raise NotImplementedError  # page-locked
    def free_host(self, pointer: int) -> None: raise NotImplementedError
    def create_stream(self) -> Any: raise NotImplementedError
    def stream_handle(self, stream: Any) -> int: raise NotImplementedError
    def destroy_stream(self, stream: Any) -> None: raise NotImplementedError
    def synchronize(self, stream: Any) -> None: raise NotImplementedError
    def copy_to_device(self, pointer: int, host: np.ndarray, stream: Any) -> None: raise NotImplementedError
    def copy_to_host(self, host: np.ndarray, pointer: int, stream: Any) -> None: raise NotImplementedError
    def create_event(self) -> Any: raise NotImplementedError
    def record_event(self, event: Any, stream: Any) -> None: raise NotImplementedError
    def elapsed_ms(self, start: Any, end: Any) -> float: raise NotImplementedError  # waits for `end`
    def destroy_event(self, event: Any) -> None: raise NotImplementedError

    def capture_graph(self, stream: Any, enqueue: Callable[[], bool]) -> Any | None:
        """`enqueue()` captured as an instantiated CUDA graph; None if it cannot be captured."""
        return None

    def launch_graph(self, graph: Any, stream: Any) -> None: raise NotImplementedError
    def destroy_graph(self, graph: Any) -> None: raise NotImplementedError

    @contextlib.contextmanager
    def activate(self) -> Iterator[None]:
        """Make the device's primary context current on this thread for the block (TensorRT calls)."""
        yield
