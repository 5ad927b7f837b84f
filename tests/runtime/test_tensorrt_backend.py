"""The TensorRT backend's bookkeeping (profiles, buffers, addresses, copies) against a tiny fake.

The fake stands in for the TensorRT and CUDA objects the backend calls, so only the backend's own
logic is tested here: which profile's context runs, which buffers are allocated or grown, which
addresses are set, what is copied to and from the host. It is not a test of TensorRT; the real
engines are tested by the `gpu` tests in tests/engines.
"""

import json
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sed_deploy.engines.profiles import class_buckets, stage_plan
from sed_deploy.runtime.backends import cuda_buffers
from sed_deploy.runtime.backends import tensorrt as trt_backend
from sed_deploy.runtime.backends.base import BackendError, BackendOptions
from sed_deploy.runtime.engine_cache import EngineRecord, Environment


class FakeMemory:
    def __init__(self):
        self.blocks, self.next, self.allocations = {}, 1000, []

    def alloc(self, nbytes):
        self.next += 1000
        self.allocations.append(nbytes)
        self.blocks[self.next] = np.zeros(nbytes, np.uint8)
        return self.next


class FakeContext:
    def __init__(self, engine, index):
        self.engine, self.index, self.shapes, self.addresses, self.runs = engine, index, {}, {}, 0

    def set_device_memory(self, pointer, size):
        self.scratch = (pointer, size)

    def set_optimization_profile_async(self, index, stream):
        assert index == self.index and stream == 7

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        sizes = {}
        for t in self.engine.spec["inputs"]:
            for dim, value in zip(t["shape"], self.shapes[t["name"]], strict=True):
                if isinstance(dim, str):
                    sizes[dim] = value
        out = next(t for t in self.engine.spec["outputs"] if t["name"] == name)
        return [sizes[d] if isinstance(d, str) else d for d in out["shape"]]

    def set_tensor_address(self, name, pointer):
        self.addresses[name] = pointer

    def execute_async_v3(self, stream):
        self.runs += 1
        for out in self.engine.spec["outputs"]:  # write the profile index into every output
            block = self.engine.memory.blocks[self.addresses[out["name"]]]
            block[:] = 0
            count = int(np.prod(self.get_tensor_shape(out["name"])))
            block[: count * 4].view(np.dtype(out["dtype"]))[:] = self.index + 1
        return True


class FakeEngine:
    def __init__(self, spec, memory):
        self.spec, self.memory = spec, memory
        self.names = [t["name"] for t in spec["inputs"] + spec["outputs"]]
        self.contexts = []
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return "in" if name in [t["name"] for t in self.spec["inputs"]] else "out"

    def get_tensor_dtype(self, name):
        return next(t["dtype"] for t in self.spec["inputs"] + self.spec["outputs"] if t["name"] == name)

    def get_device_memory_size_for_profile_v2(self, index):
        return 1000 * (index + 1)

    def create_execution_context(self, strategy=None):
        assert strategy == "user-managed"
        self.contexts.append(FakeContext(self, len(self.contexts)))
        return self.contexts[-1]


@pytest.fixture
def fake(monkeypatch):
    memory = FakeMemory()
    engines = []

    def deserialize(data):
        engines.append(FakeEngine(json.loads(data), memory))
        return engines[-1]

    trt = SimpleNamespace(
        Logger=SimpleNamespace(WARNING=2), TensorIOMode=SimpleNamespace(INPUT="in", OUTPUT="out"),
        nptype=np.dtype, Runtime=lambda logger: SimpleNamespace(deserialize_cuda_engine=deserialize),
        Dims=tuple, ExecutionContextAllocationStrategy=SimpleNamespace(USER_MANAGED="user-managed"),
    )
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    monkeypatch.setattr(trt_backend, "require", lambda name, feature=None: trt)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    context = SimpleNamespace(stream_handle=7, stream="stream", synchronize=lambda: None, close=lambda: None)
    monkeypatch.setattr(cuda_buffers, "CudaContext", lambda index: context)

    class Buffer(cuda_buffers.DeviceBuffer):
        def ensure(self, nbytes):
            if nbytes > self.capacity or self.allocation is None:
                self.allocation, self.capacity = memory.alloc(nbytes), nbytes
            return self.allocation

    monkeypatch.setattr(cuda_buffers, "DeviceBuffer", Buffer)
    monkeypatch.setattr(cuda_buffers.PinnedBuffer, "view", lambda self, shape, dtype: np.empty(shape, dtype))
    monkeypatch.setattr(cuda_buffers, "copy_to_device", lambda p, host, s: memory.blocks[p].__setitem__(
        slice(0, host.nbytes), host.reshape(-1).view(np.uint8)))
    monkeypatch.setattr(cuda_buffers, "copy_to_host", lambda host, p, s: host.reshape(-1).view(np.uint8).__setitem__(
        slice(None), memory.blocks[p][: host.nbytes]))
    return SimpleNamespace(memory=memory, engines=engines)


def _backend(tiny_artifacts, tmp_path, stage):
    _, manifest = tiny_artifacts
    spec = manifest.stages[stage]
    engine_file = tmp_path / f"{stage}.engine"
    engine_file.write_text(json.dumps({
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in spec.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in spec.outputs],
    }))
    record = EngineRecord(stage=stage, precision="fp32", key="k", graph_sha256=spec.sha256,
                          environment=Environment("10.3", "fake", "8.7"),
                          plan=stage_plan(spec, class_buckets(459)), file=engine_file.name)
    return trt_backend.TensorrtBackend(spec, tmp_path, manifest, BackendOptions(), record, trt_backend.CudaSession())


def _decoder1_feeds(keep, classes=60):
    rng = np.random.default_rng(0)
    return {"keep": np.arange(keep, dtype=np.int32) % classes,
            "embedding": rng.standard_normal((classes, 128, 4, 4)).astype(np.float32),
            "volume": rng.standard_normal((classes, 80, 4, 4)).astype(np.float32),
            "guidance4": rng.standard_normal((1, 32, 8, 8)).astype(np.float32)}


def test_profile_per_class_count_and_buffers_grow_only(fake, tiny_artifacts, tmp_path):
    backend = _backend(tiny_artifacts, tmp_path, "decoder1").load()
    engine = fake.engines[0]
    assert len(engine.contexts) == 3  # one context per profile
    scratch = {c.scratch for c in engine.contexts}  # sharing one scratch area sized for the largest profile
    assert len(scratch) == 1 and scratch.pop()[1] == 3000
    out = backend.run(_decoder1_feeds(5))
    assert [c.runs for c in engine.contexts] == [1, 0, 0]
    assert out["features1"].shape == (5, 64, 8, 8) and out["topk1"].dtype == np.int32
    allocated = len(fake.memory.allocations)
    backend.run(_decoder1_feeds(3))  # smaller: same buffers, same context
    assert len(fake.memory.allocations) == allocated and [c.runs for c in engine.contexts] == [2, 0, 0]
    big = backend.run(_decoder1_feeds(40))  # another profile, outputs grow
    assert [c.runs for c in engine.contexts] == [2, 1, 0]
    assert len(fake.memory.allocations) > allocated
    assert (backend.to_host(big["topk1"]) == 2).all()  # the profile-1 context wrote it
    context = engine.contexts[1]
    assert context.addresses["features1"] == big["features1"].pointer
    assert context.shapes["keep"] == (40,) and context.shapes["embedding"] == (60, 128, 4, 4)


def test_device_outputs_feed_the_next_stage_without_copies(fake, tiny_artifacts, tmp_path):
    first = _backend(tiny_artifacts, tmp_path, "decoder1").load()
    second = _backend(tiny_artifacts, tmp_path, "decoder2").load()
    out = first.run(_decoder1_feeds(6))
    feeds = {"keep": np.array([0, 2], np.int32), "features1": out["features1"],
             "corr_guidance1": out["corr_guidance1"], "guidance3": np.zeros((1, 16, 16, 16), np.float32)}
    second.run(feeds)
    context = fake.engines[1].contexts[0]
    assert context.addresses["features1"] == out["features1"].pointer
    assert context.shapes["features1"] == (6, 64, 8, 8)


def test_class_counts_outside_every_profile(fake, tiny_artifacts, tmp_path):
    backend = _backend(tiny_artifacts, tmp_path, "decoder1").load()
    with pytest.raises(BackendError, match="profiles do not cover .* sed-build --max-classes"):
        backend.run(_decoder1_feeds(500, classes=500))


def test_undeserialisable_engine(fake, tiny_artifacts, tmp_path, monkeypatch):
    backend = _backend(tiny_artifacts, tmp_path, "cost")
    monkeypatch.setattr(sys.modules["tensorrt"], "Runtime",
                        lambda logger: SimpleNamespace(deserialize_cuda_engine=lambda data: None))
    with pytest.raises(BackendError, match="could not deserialise .* rebuild it with sed-build"):
        backend.load()


def test_auto_reports_why_tensorrt_is_not_used(tiny_artifacts):
    from sed_deploy.runtime.backends import tensorrt_unavailable_reason

    out, manifest = tiny_artifacts
    assert tensorrt_unavailable_reason(manifest, out) == "tensorrt is not installed"


def test_missing_text_engine_without_onnxruntime_is_a_clear_error(tiny_artifacts, monkeypatch):
    from sed_deploy.runtime.backends import onnxruntime as ort_backend
    from sed_deploy.runtime.errors import MissingDependencyError

    out, manifest = tiny_artifacts

    def missing(*args, **kwargs):
        raise MissingDependencyError("onnxruntime is not installed")

    monkeypatch.setattr(ort_backend, "resolve_providers", missing)
    fallback = trt_backend._OrtFallback(manifest.stages["text_encoder"], out, manifest, BackendOptions())
    with pytest.raises(BackendError, match="no TensorRT engine and onnxruntime is not installed: run sed-build"):
        fallback.load()


def test_check_sizes_cover_every_profile(tiny_artifacts):
    from sed_deploy.runtime.stage_feeds import plan_sizes

    _, manifest = tiny_artifacts
    spec = manifest.stages["decoder2"]
    sizes = plan_sizes(spec, stage_plan(spec, class_buckets(459)))
    assert {s["T2"] for s in sizes} == {1, 32, 33, 128, 129, 459}
    assert plan_sizes(manifest.stages["image_encoder"], []) == [{}]
