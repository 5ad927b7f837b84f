"""The device-memory layer: its choice, both implementations on the CUDA doubles, buffer lifetimes; and
on a real GPU (gpu), a round trip through whichever layer is installed."""

from __future__ import annotations

import gc
import importlib.util
import sys
import threading

import numpy as np
import pytest
from fakes.cuda_double import FakeGpu, context_stacks, cudart_module
from fakes.install import install

from sed_deploy.core.errors import ConfigError, MissingDependencyError
from sed_deploy.runtime.backends import cuda_memory
from sed_deploy.runtime.backends.base import BackendError
from sed_deploy.runtime.backends.cuda_api import CudaError
from sed_deploy.runtime.backends.cuda_memory import CudaSession, DeviceArray, cuda_api

LAYERS = ("cuda-python", "pycuda")


def test_layer_choice(monkeypatch):
    monkeypatch.setenv("SED_DEPLOY_CUDA", "cupy")
    with pytest.raises(ConfigError, match="SED_DEPLOY_CUDA must be one of auto, cuda-python, pycuda, got 'cupy'"):
        cuda_memory.layer_choice()
    monkeypatch.setenv("SED_DEPLOY_CUDA", "auto")
    assert cuda_memory.layer_choice() == ("cuda-python", "pycuda")  # compiler-free first


def test_no_layer_installed_names_the_extra(monkeypatch):
    monkeypatch.setenv("SED_DEPLOY_CUDA", "pycuda")
    monkeypatch.setattr(cuda_memory, "available", lambda name: False)
    monkeypatch.setattr(cuda_memory, "_API", {})
    with pytest.raises(MissingDependencyError, match=r"pip install 'sed-deploy\[trt\]' \(no compiler needed\)"):
        cuda_api()


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python's bindings are not installed")
def test_real_bindings_without_a_driver_fail_in_one_line(monkeypatch):
    """The real cuda-bindings package here has no driver to talk to: one line naming the CUDA error."""
    from sed_deploy.runtime.backends.cuda_cudart import CudartApi

    try:
        api = CudartApi()
    except CudaError as exc:
        message = str(exc)
        assert "\n" not in message and message.startswith("CUDA call cudaGetDeviceCount failed: cudaError")
        return
    assert api.device_count() >= 1  # a machine with a GPU: nothing to show here


def test_bindings_newer_than_the_driver(monkeypatch):
    """cuda-bindings 13 on JetPack 6's CUDA 12.6 driver: the fix, in one line."""
    for name, module in cudart_module(FakeGpu(driver=12060), bindings_major=13).items():
        monkeypatch.setitem(sys.modules, name, module)
    from sed_deploy.runtime.backends.cuda_cudart import CudartApi

    with pytest.raises(CudaError, match=r"needs a CUDA 13 driver, this driver supports CUDA 12.6: "
                                        r"pip install 'cuda-bindings<13'"):
        CudartApi()


@pytest.mark.parametrize("layer", LAYERS)
class TestOnDoubles:
    def test_copies_round_trip_through_pinned_buffers(self, monkeypatch, layer):
        env = install(monkeypatch, layer=layer)
        session = CudaSession().acquire()
        data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        staged = session.pinned_buffer("in").view(data.shape, data.dtype)
        staged[...] = data
        buffer = session.device_buffer("x")
        buffer.ensure(data.nbytes)
        session.api.copy_to_device(buffer.pointer, staged, session.stream)
        back = session.pinned_buffer("out").view(data.shape, data.dtype)
        session.api.copy_to_host(back, buffer.pointer, session.stream)
        session.synchronize()
        np.testing.assert_array_equal(back, data)
        np.testing.assert_array_equal(env.gpu.read(buffer.pointer, data.shape, data.dtype), data)
        session.release()
        assert env.gpu.used == 0 and not env.gpu.host  # device and pinned memory freed by the last release

    def test_growth_moves_the_buffer_and_old_arrays_refuse(self, monkeypatch, layer):
        env = install(monkeypatch, layer=layer)
        session = CudaSession().acquire()
        buffer = session.device_buffer("decoder1/features1")
        version = buffer.claim(1024)
        old = DeviceArray(buffer, version, (256,), np.dtype(np.float32))
        first = old.pointer
        buffer.claim(4096)  # grows: the old block is freed
        assert buffer.pointer != first and first not in env.gpu.blocks
        with pytest.raises(BackendError, match="decoder1/features1 was overwritten or freed"):
            old.pointer  # noqa: B018
        session.close()

    def test_a_session_never_closed_is_freed_when_collected(self, monkeypatch, layer):
        env = install(monkeypatch, layer=layer)
        session = CudaSession().acquire()
        session.device_buffer("x").ensure(4096)
        session.pinned_buffer("y").view((16,), np.float32)
        assert env.gpu.used and env.gpu.host
        del session
        gc.collect()
        assert env.gpu.used == 0 and not env.gpu.host

    def test_any_thread_may_call(self, monkeypatch, layer):
        """pycuda's double refuses work on a thread without a current context (as pycuda does); the layer
        makes its context current around each call, and leaves every stack empty."""
        env = install(monkeypatch, layer=layer)
        api = cuda_api()
        pointers, errors = [], []

        def work():
            try:
                pointers.append(api.malloc(512))
                api.free(pointers[-1])
            except Exception as exc:  # reported below
                errors.append(exc)

        thread = threading.Thread(target=work)
        thread.start()
        thread.join()
        assert not errors and pointers and env.gpu.used == 0
        if layer == "pycuda":
            assert all(depth == 0 for depth in context_stacks().values())
            driver = sys.modules["pycuda.driver"]
            with pytest.raises(driver.LogicError, match="no currently active context"):
                driver.mem_alloc(16)  # the double is strict: bare pycuda on a thread with no context

    def test_out_of_memory(self, monkeypatch, layer):
        install(monkeypatch, layer=layer, gpu=FakeGpu(memory=1 << 20))
        session = CudaSession().acquire()
        with pytest.raises(cuda_memory.DeviceMemoryError, match=r"out of GPU memory: decoder3/logits needs 2 MB, "
                                                               r"1 MB of 1 MB free"):
            session.device_buffer("decoder3/logits").ensure(2 << 20)
        session.close()


@pytest.mark.gpu
def test_real_gpu_round_trip_and_events():
    """On a GPU: the installed layer allocates, copies both ways, times with events and frees."""
    api = cuda_api()
    session = CudaSession().acquire()
    data = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32)
    staged = session.pinned_buffer("in").view(data.shape, data.dtype)
    staged[...] = data
    buffer = session.device_buffer("x")
    buffer.ensure(data.nbytes)
    session.start_timer()
    api.copy_to_device(buffer.pointer, staged, session.stream)
    back = session.pinned_buffer("out").view(data.shape, data.dtype)
    api.copy_to_host(back, buffer.pointer, session.stream)
    seconds = session.stop_timer()
    np.testing.assert_array_equal(back, data)
    assert 0 <= seconds < 10
    free_before, _ = api.memory_info()
    session.close()
    assert api.memory_info()[0] >= free_before


@pytest.mark.skipif(importlib.util.find_spec("cuda") is None, reason="cuda-python's bindings are not installed")
def test_the_cudart_double_only_has_names_the_real_bindings_have():
    """Every call the double offers (and so every call CudartApi can make in these tests) exists in the
    installed cuda-bindings, with the same enum members."""
    from cuda.bindings import runtime as real

    fake = cudart_module(FakeGpu())["cuda.bindings.runtime"]
    names = [n for n in vars(fake) if n.startswith("cuda")]
    assert names and [n for n in names if not hasattr(real, n)] == []
    for enum_name in ("cudaError_t", "cudaMemcpyKind", "cudaStreamCaptureMode"):
        for member in getattr(fake, enum_name).__members__:
            assert hasattr(getattr(real, enum_name), member), (enum_name, member)
