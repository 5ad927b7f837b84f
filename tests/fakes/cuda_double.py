"""A strict double of one CUDA GPU, seen through cuda-python's runtime bindings and through pycuda.

`FakeGpu` is the device: memory blocks at 256-byte aligned addresses (a read or write outside a live
block, freed memory included, raises `GpuFault`, as a real kernel would crash or corrupt), a memory
limit (cudaMalloc fails past it), streams that can capture work into graphs, events on a fake clock,
and counters of the bytes that cross between host and device.

`cudart_module(gpu)` builds the `cuda.bindings.runtime` subset the project uses, with the bindings'
conventions: every call returns a tuple whose first item is a `cudaError_t` (cuda-bindings 12.9 /
13.x docstrings). `pycuda_module(gpu)` builds the `pycuda.driver` subset, with pycuda's context
rules (src/cpp/cuda.hpp at inducer/pycuda v2026.1):
- the context stack is per thread; an operation that needs a context on a thread whose stack is
  empty fails ("no currently active context?", `explicit_context_dependent`);
- freeing an allocation whose context is not current on this thread, from a thread other than the
  one that retained the context, fails ("cannot activate out-of-thread context");
- a thread or the interpreter ending with a non-empty stack aborts the process ("PyCUDA ERROR: The
  context stack was not empty upon module cleanup", `context_stack::~context_stack`): the double
  checks every thread's stack at exit and calls `os.abort()`.
"""

from __future__ import annotations

import atexit
import bisect
import ctypes
import enum
import importlib.machinery
import os
import sys
import threading
from types import ModuleType, SimpleNamespace

import numpy as np

ALIGN = 256


class GpuFault(AssertionError):
    """What would be a crash or silent corruption on a real GPU."""


class FakeStream:
    def __init__(self, gpu: FakeGpu, handle: int) -> None:
        self.gpu, self.handle, self.capture = gpu, handle, None

    def __int__(self) -> int:
        return self.handle


class FakeGpu:
    """Device memory, streams, graphs and a clock (see the module docstring)."""

    def __init__(self, name: str = "NVIDIA Fake Orin", capability: tuple[int, int] = (8, 7),
                 memory: int = 1 << 30, driver: int = 12060) -> None:
        self.name, self.capability, self.total, self.driver = name, capability, memory, driver
        self.blocks: dict[int, np.ndarray] = {}
        self.starts: list[int] = []
        self.next_address = 0x7F00_0000_0000
        self.host: dict[int, ctypes.Array] = {}
        self.streams: dict[int, FakeStream] = {}
        self.clock_ms = 0.0
        self.lock = threading.RLock()
        self.counters = dict.fromkeys(("malloc", "free", "h2d_bytes", "d2h_bytes", "h2d", "d2h", "init",
                                       "graph_launch", "capture"), 0)

    # memory -----------------------------------------------------------------------------------

    @property
    def used(self) -> int:
        return sum(b.nbytes for b in self.blocks.values())

    def malloc(self, nbytes: int) -> int | None:
        with self.lock:
            if self.used + nbytes > self.total:
                return None
            address = self.next_address
            self.next_address += (nbytes + ALIGN - 1) // ALIGN * ALIGN + ALIGN  # a gap: overruns fault
            self.blocks[address] = np.zeros(nbytes, np.uint8)
            bisect.insort(self.starts, address)
            self.counters["malloc"] += 1
            return address

    def free(self, address: int) -> bool:
        with self.lock:
            if address not in self.blocks:
                return False
            del self.blocks[address]
            self.starts.remove(address)
            self.counters["free"] += 1
            return True

    def view(self, address: int, nbytes: int) -> np.ndarray:
        """The device bytes [address, address + nbytes) of one live block, or GpuFault."""
        with self.lock:
            i = bisect.bisect_right(self.starts, address) - 1
            if i < 0:
                raise GpuFault(f"address {address:#x} is not device memory")
            start = self.starts[i]
            block = self.blocks[start]
            if address + nbytes > start + block.nbytes:
                raise GpuFault(f"access of {nbytes} bytes at {address:#x} runs past a {block.nbytes}-byte block "
                               "(freed, too small, or not allocated)")
            return block[address - start: address - start + nbytes]

    def malloc_host(self, nbytes: int) -> int:
        buffer = (ctypes.c_ubyte * max(nbytes, 1))()
        address = ctypes.addressof(buffer)
        self.host[address] = buffer
        return address

    def free_host(self, address: int) -> bool:
        return self.host.pop(address, None) is not None

    def host_bytes(self, address: int, nbytes: int) -> np.ndarray:
        return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(address))

    def copy(self, dst: int, src: int, nbytes: int, to_device: bool) -> None:
        if to_device:
            self.view(dst, nbytes)[:] = self.host_bytes(src, nbytes)
            self.counters["h2d_bytes"] += nbytes
            self.counters["h2d"] += 1
        else:
            self.host_bytes(dst, nbytes)[:] = self.view(src, nbytes)
            self.counters["d2h_bytes"] += nbytes
            self.counters["d2h"] += 1

    def read(self, address: int, shape: tuple[int, ...], dtype) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self.view(address, nbytes).view(dtype).reshape(shape).copy()

    def write(self, address: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        self.view(address, data.nbytes)[:] = data.reshape(-1).view(np.uint8)

    # streams, graphs, clock -------------------------------------------------------------------

    def new_stream(self) -> FakeStream:
        with self.lock:
            stream = FakeStream(self, 0x5000 + len(self.streams) + 1)
            self.streams[stream.handle] = stream
            return stream

    def enqueue(self, stream_handle: int, work) -> None:
        """Run `work()` now, or record it when the stream is capturing (graphs replay it)."""
        stream = self.streams.get(int(stream_handle))
        if stream is None:
            raise GpuFault(f"work enqueued on unknown stream {stream_handle}")
        if stream.capture is not None:
            stream.capture.append(work)
        else:
            work()
            self.clock_ms += 1.0


def _module(name: str) -> ModuleType:
    module = ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    return module


# cuda.bindings.runtime ------------------------------------------------------------------------

class cudaError_t(enum.IntEnum):  # noqa: N801 - the bindings' names
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorStreamCaptureInvalidated = 901


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class cudaStreamCaptureMode(enum.IntEnum):  # noqa: N801
    cudaStreamCaptureModeGlobal = 0
    cudaStreamCaptureModeThreadLocal = 1
    cudaStreamCaptureModeRelaxed = 2


def cudart_module(gpu: FakeGpu, bindings_major: int = 12) -> dict[str, ModuleType]:
    """`cuda`, `cuda.bindings`, `cuda.bindings.runtime`, `cuda.bindings.utils` on `gpu` (for sys.modules)."""
    ok = cudaError_t.cudaSuccess
    rt = _module("cuda.bindings.runtime")
    rt.cudaError_t, rt.cudaMemcpyKind, rt.cudaStreamCaptureMode = cudaError_t, cudaMemcpyKind, cudaStreamCaptureMode
    rt.cudaStreamNonBlocking, rt.cudaEventDefault = 1, 0
    events: dict[int, float | None] = {}
    graphs: dict[int, list] = {}

    def get_device_count():
        gpu.counters["init"] += 1
        return (ok, 1)

    def get_properties(index):
        if index != 0:
            return (cudaError_t.cudaErrorInvalidValue, None)
        return (ok, SimpleNamespace(name=gpu.name.encode() + b"\0" * 8, major=gpu.capability[0],
                                    minor=gpu.capability[1], totalGlobalMem=gpu.total))

    def malloc(nbytes):
        address = gpu.malloc(int(nbytes))
        return (cudaError_t.cudaErrorMemoryAllocation, None) if address is None else (ok, address)

    def memcpy_async(dst, src, nbytes, kind, stream):
        to_device = kind == cudaMemcpyKind.cudaMemcpyHostToDevice
        gpu.enqueue(int(stream), lambda: gpu.copy(int(dst), int(src), int(nbytes), to_device))
        return (ok,)

    def create_event(flags):
        handle = 0x9000 + len(events) + 1
        events[handle] = None
        return (ok, handle)

    def record_event(event, stream):
        events[event] = gpu.clock_ms
        return (ok,)

    def elapsed(start, end):
        if events.get(start) is None or events.get(end) is None:
            return (cudaError_t.cudaErrorInvalidValue, None)
        return (ok, float(events[end] - events[start]))

    def begin_capture(stream, mode):
        gpu.streams[int(stream)].capture = []
        return (ok,)

    def end_capture(stream):
        record = gpu.streams[int(stream)]
        work, record.capture = record.capture, None
        handle = 0xA000 + len(graphs) + 1
        graphs[handle] = work
        gpu.counters["capture"] += 1
        return (ok, handle)

    def launch(graph, stream):
        def replay():
            for work in graphs[graph]:
                work()
        gpu.enqueue(int(stream), replay)
        gpu.counters["graph_launch"] += 1
        return (ok,)

    rt.cudaGetDeviceCount = get_device_count
    rt.cudaDriverGetVersion = lambda: (ok, gpu.driver)
    rt.cudaRuntimeGetVersion = lambda: (ok, bindings_major * 1000 + 90)
    rt.cudaGetDeviceProperties = get_properties
    rt.cudaMemGetInfo = lambda: (ok, gpu.total - gpu.used, gpu.total)
    rt.cudaGetErrorName = lambda err: (ok, cudaError_t(err).name.encode())
    rt.cudaGetLastError = lambda: (ok,)
    rt.cudaSetDevice = lambda index: (ok,)
    rt.cudaMalloc = malloc
    rt.cudaFree = lambda p: (ok,) if gpu.free(int(p)) else (cudaError_t.cudaErrorInvalidValue,)
    rt.cudaMallocHost = lambda nbytes: (ok, gpu.malloc_host(int(nbytes)))
    rt.cudaFreeHost = lambda p: (ok,) if gpu.free_host(int(p)) else (cudaError_t.cudaErrorInvalidValue,)
    rt.cudaMemcpyAsync = memcpy_async
    rt.cudaStreamCreateWithFlags = lambda flags: (ok, gpu.new_stream())
    rt.cudaStreamDestroy = lambda s: (ok,) if gpu.streams.pop(int(s), None) else (cudaError_t.cudaErrorInvalidValue,)
    rt.cudaStreamSynchronize = lambda s: (ok,)
    rt.cudaEventCreateWithFlags = create_event
    rt.cudaEventRecord = record_event
    rt.cudaEventSynchronize = lambda e: (ok,)
    rt.cudaEventElapsedTime = elapsed
    rt.cudaEventDestroy = lambda e: (ok,) if events.pop(e, 0) != 0 else (cudaError_t.cudaErrorInvalidValue,)
    rt.cudaStreamBeginCapture = begin_capture
    rt.cudaStreamEndCapture = end_capture
    rt.cudaGraphInstantiateWithFlags = lambda graph, flags: (ok, graph)
    rt.cudaGraphLaunch = launch
    rt.cudaGraphDestroy = lambda graph: (ok,)
    rt.cudaGraphExecDestroy = lambda graph: (ok,)

    utils = _module("cuda.bindings.utils")
    utils.get_cuda_native_handle = lambda obj: int(obj)
    bindings = _module("cuda.bindings")
    bindings.runtime, bindings.utils = rt, utils
    cuda = _module("cuda")
    cuda.bindings = bindings
    return {"cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt, "cuda.bindings.utils": utils}


# pycuda.driver ----------------------------------------------------------------------------------

_STACKS: dict[int, list] = {}  # thread id -> that thread's context stack (pycuda: thread_specific_ptr)
_EXIT_CHECK: list[bool] = []


def _stack() -> list:
    return _STACKS.setdefault(threading.get_ident(), [])


def _abort_if_stacks_left() -> None:
    left = {t: len(s) for t, s in _STACKS.items() if s}
    if left:
        sys.stdout.flush()
        sys.stderr.write("PyCUDA ERROR: The context stack was not empty upon module cleanup.\n")
        sys.stderr.flush()
        os.abort()


def pycuda_module(gpu: FakeGpu) -> dict[str, ModuleType]:
    """`pycuda` and `pycuda.driver` on `gpu` (for sys.modules); registers the exit check once."""
    if not _EXIT_CHECK:
        atexit.register(_abort_if_stacks_left)
        _EXIT_CHECK.append(True)
    driver = _module("pycuda.driver")

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class MemoryError_(Error):
        pass

    def current():
        stack = _stack()
        if not stack:
            raise LogicError("explicit_context_dependent failed: invalid device context - no currently active context?")
        return stack[-1]

    class Context:
        def __init__(self) -> None:
            self.thread = threading.get_ident()

        def push(self) -> None:
            _stack().append(self)

        @staticmethod
        def pop() -> None:
            stack = _stack()
            if not stack:
                raise LogicError("context::pop failed: cannot pop context from empty stack")
            stack.pop()

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.capability

        def retain_primary_context(self) -> Context:
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes: int) -> None:
            self.context = current()
            address = gpu.malloc(nbytes)
            if address is None:
                raise MemoryError_("cuMemAlloc failed: out of memory")
            self.address = address

        def __int__(self) -> int:
            return self.address

        def free(self) -> None:
            stack = _stack()
            if (not stack or stack[-1] is not self.context) and threading.get_ident() != self.context.thread:
                raise LogicError("cannot activate out-of-thread context")
            gpu.free(self.address)

    class PagelockedHostAllocation:
        def __init__(self, nbytes: int) -> None:
            self.context = current()
            self.address = gpu.malloc_host(nbytes)
            self.__array_interface__ = {"shape": (nbytes,), "typestr": "|u1", "data": (self.address, False),
                                        "version": 3}

        def free(self) -> None:
            current()
            gpu.free_host(self.address)

    class Stream:
        def __init__(self) -> None:
            current()
            self.fake = gpu.new_stream()
            self.handle = self.fake.handle

        def synchronize(self) -> None:
            current()

    class Event:
        def __init__(self) -> None:
            current()
            self.time: float | None = None

        def record(self, stream: Stream) -> None:
            current()
            self.time = gpu.clock_ms

        def synchronize(self) -> None:
            current()

        def time_since(self, start: Event) -> float:
            return float(self.time - start.time)

    def memcpy_htod_async(dest, src, stream):
        current()
        gpu.enqueue(stream.handle, lambda: gpu.copy(int(dest), src.ctypes.data, src.nbytes, True))

    def memcpy_dtoh_async(dest, src, stream):
        current()
        gpu.enqueue(stream.handle, lambda: gpu.copy(dest.ctypes.data, int(src), dest.nbytes, False))

    def init():
        gpu.counters["init"] += 1

    driver.Error, driver.LogicError, driver.MemoryError = Error, LogicError, MemoryError_
    driver.Context, driver.Device, driver.Stream, driver.Event = Context, Device, Stream, Event
    driver.init = init
    driver.mem_alloc = DeviceAllocation
    def pagelocked_empty(nbytes, dtype):
        assert np.dtype(dtype) == np.uint8, "the double makes byte arrays only"
        return np.asarray(PagelockedHostAllocation(int(nbytes)))  # its base owns the memory, as in pycuda

    def mem_get_info():
        current()
        return gpu.total - gpu.used, gpu.total

    driver.pagelocked_empty, driver.mem_get_info = pagelocked_empty, mem_get_info
    driver.memcpy_htod_async, driver.memcpy_dtoh_async = memcpy_htod_async, memcpy_dtoh_async
    package = _module("pycuda")
    package.driver = driver
    return {"pycuda": package, "pycuda.driver": driver}


def context_stacks() -> dict[int, int]:
    """Depth of every thread's pycuda context stack (for tests)."""
    return {t: len(s) for t, s in _STACKS.items()}
