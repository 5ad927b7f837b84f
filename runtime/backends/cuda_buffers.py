"""Device memory, pinned host memory and a stream for the TensorRT backend, on pycuda.

All pycuda use is in this module, so another binding (cuda-python) could replace it. The device's
primary context is retained and pushed (never `pycuda.autoinit`, whose own context fights torch and
other CUDA users in the same process). Device buffers are allocated once per tensor and grown only
when a larger shape arrives; pinned host buffers stage what crosses to and from the host.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..optional import require


def _cuda():
    cuda = require("pycuda.driver", "the tensorrt backend's device memory")
    cuda.init()
    return cuda


def device_info(index: int = 0) -> tuple[str, str]:
    """(name, compute capability "major.minor") of CUDA device `index`."""
    device = _cuda().Device(index)
    major, minor = device.compute_capability()
    return device.name(), f"{major}.{minor}"


class CudaContext:
    """The retained primary context of one device, pushed while in use."""

    def __init__(self, index: int = 0) -> None:
        cuda = _cuda()
        self.context: Any = cuda.Device(index).retain_primary_context()
        self.context.push()
        self.stream = cuda.Stream()

    @property
    def stream_handle(self) -> int:
        return int(self.stream.handle)

    def synchronize(self) -> None:
        self.stream.synchronize()

    def close(self) -> None:
        if self.context is not None:
            self.stream.synchronize()
            self.context.pop()
            self.context = None


class DeviceBuffer:
    """A device allocation that grows (never shrinks) to the largest size asked for."""

    def __init__(self) -> None:
        self.allocation: Any = None
        self.capacity = 0

    def ensure(self, nbytes: int) -> int:
        """The device pointer of at least `nbytes` bytes (reallocated only to grow)."""
        if nbytes > self.capacity or self.allocation is None:
            self.allocation = _cuda().mem_alloc(max(nbytes, 1))
            self.capacity = max(nbytes, 1)
        return int(self.allocation)


class PinnedBuffer:
    """Page-locked host memory that grows to the largest size asked for."""

    def __init__(self) -> None:
        self.array = np.empty(0, dtype=np.uint8)

    def view(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        if nbytes > self.array.nbytes:
            self.array = _cuda().pagelocked_empty(max(nbytes, 1), dtype=np.uint8)
        return self.array[:nbytes].view(dtype).reshape(shape)


def copy_to_device(pointer: int, host: np.ndarray, stream) -> None:
    _cuda().memcpy_htod_async(pointer, host, stream)


def copy_to_host(host: np.ndarray, pointer: int, stream) -> None:
    _cuda().memcpy_dtoh_async(host, pointer, stream)
