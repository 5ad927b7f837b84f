"""The TensorRT backend and the pipeline on strict doubles of TensorRT 10.3, 10.13 and 11.x and of CUDA.

Engines are built by `sed-build`'s own code against the double of each version; the double executes
each engine by reading its inputs from the fake GPU's memory, running the stage graph in ONNX Runtime
and writing the outputs back (tests/fakes). So the pipeline's result on `backend="tensorrt"` can be
compared with ONNX Runtime's, and every documented misuse (tests/fakes/tensorrt_double.py) fails
here as it would on a GPU. Each defect test says why the code at commit 641d8cd fails it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from fakes.cuda_double import FakeGpu, GpuFault, context_stacks
from fakes.install import install

from sed_deploy.engines.artifacts_build import BuildOptions, build_artifacts
from sed_deploy.runtime.backends.base import BackendError
from sed_deploy.runtime.backends.cuda_api import DeviceMemoryError
from sed_deploy.runtime.backends.options import OPTIONS_OF, BackendOptions, TensorrtOptions
from sed_deploy.runtime.pipeline import Pipeline

VERSIONS = ("10.3", "10.13", "11")
NAMES = ["person", "dog", "tree, forest", "sky", "road"]  # embedded at export: no text stage needed
IMAGE = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
FP32 = TensorrtOptions(precision="fp32")
GRAPHS = TensorrtOptions(precision="fp32", cuda_graphs=True)


@pytest.fixture(scope="module")
def engines(tiny_artifacts, tmp_path_factory):
    """{version: artifacts folder with fp32 and fp16 engines built on that version's double}."""
    folders = {}
    for version in VERSIONS:
        folder = tmp_path_factory.mktemp(f"trt{version}") / "tiny"
        shutil.copytree(tiny_artifacts[0], folder)
        with pytest.MonkeyPatch.context() as mp:
            install(mp, version)
            for precision in ("fp32", "fp16"):
                build_artifacts(BuildOptions(folder=folder, precision=precision, max_classes=40, quiet=True),
                                say=lambda line: None)
        folders[version] = folder
    return folders


def _run(folder, backend, precision=None, names=NAMES, cer=True, **options):
    settings = OPTIONS_OF[backend](precision=precision, **options)
    with Pipeline.from_artifacts(folder, backend=backend, cer=cer, topk=2, options=settings) as pipe:
        pipe.set_vocabulary(names, show_progress=False)
        return pipe(IMAGE)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_pipeline_matches_onnxruntime(engines, monkeypatch, version, precision):
    """Every stage through the backend's buffers, profiles and copies gives ONNX Runtime's result exactly
    (the double computes with ONNX Runtime, so any difference is the backend's bookkeeping)."""
    install(monkeypatch, version)
    for cer in (True, False):
        got = _run(engines[version], "tensorrt", precision, cer=cer)
        want = _run(engines[version], "ort", precision, cer=cer)
        assert [k.tolist() for k in got.kept] == [k.tolist() for k in want.kept]
        np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-6)
        assert got.engines["decoder3"].startswith(f"tensorrt {precision} (decoder3.{precision}.")


def test_text_stage_engine_encodes_new_names(engines, monkeypatch):
    """Names not embedded at export go through the text engine on the device (int64 tokens, profile M x L)."""
    install(monkeypatch, "10.3")
    names = ["cat", "water, river", "building"]
    got = _run(engines["10.3"], "tensorrt", "fp32", names=names)
    want = _run(engines["10.3"], "ort", "fp32", names=names)
    assert [k.tolist() for k in got.kept] == [k.tolist() for k in want.kept]
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=1e-5)


def test_text_embeddings_cross_to_the_device_once_per_vocabulary(engines, monkeypatch, tiny_artifacts):
    """Defect 3: at 641d8cd `run_stages` passed the host [T,80,D] text array to the cost stage for every
    image, so each image copied it up again. Now per image only the image and `keep` go up."""
    env = install(monkeypatch, "10.3")
    manifest = tiny_artifacts[1]
    text_bytes = len(NAMES) * manifest.num_templates * manifest.embed_dim * 4
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", topk=2, options=FP32) as pipe:
        before = env.gpu.counters["h2d_bytes"]
        pipe.set_vocabulary(NAMES, show_progress=False)
        assert env.gpu.counters["h2d_bytes"] - before == text_bytes
        for _ in range(2):
            before = env.gpu.counters["h2d_bytes"]
            result = pipe(IMAGE)
            image_bytes = 3 * manifest.preprocessing.image_size ** 2 * 4
            keep_bytes = 4 * sum(len(k) for k in result.kept)
            assert env.gpu.counters["h2d_bytes"] - before == image_bytes + keep_bytes
        pipe.text = pipe.text.copy()  # replaced behind set_vocabulary's back: uploaded on the next image
        before = env.gpu.counters["h2d_bytes"]
        result = pipe(IMAGE)
        assert env.gpu.counters["h2d_bytes"] - before == text_bytes + image_bytes + keep_bytes


def test_engine_choice_without_precision_prefers_a_complete_fp16_set(engines, monkeypatch):
    """Defect 5: at 641d8cd the last sidecar by file name won, so fp32 ("cost.fp32...") beat fp16
    whenever both existed, and nothing said which engines ran."""
    install(monkeypatch, "10.13")
    result = _run(engines["10.13"], "tensorrt")
    assert all(what.startswith("tensorrt fp16 (") for what in result.engines.values())
    assert result.summary()["engines"] == result.engines
    assert _run(engines["10.13"], "tensorrt", "fp32").engines["cost"].startswith("tensorrt fp32 (cost.fp32.")


def test_scratch_is_allocated_per_profile_on_first_use(engines, monkeypatch):
    """Defect 4: at 641d8cd every stage allocated the largest profile's scratch at load. Now one scratch
    area, shared by the stages, is grown to what the profiles in use need."""
    env = install(monkeypatch, "10.3")
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", topk=2, options=FP32) as pipe:
        scratch = pipe.backends["cost"].shared.scratch
        assert scratch.capacity == 0  # nothing at load
        pipe.set_vocabulary(NAMES, show_progress=False)
        pipe(IMAGE)
        loaded = [b for b in pipe.backends.values() if getattr(b, "engine", None) is not None]
        assert all(set(b.contexts) <= {0} for b in loaded)  # 5 classes: the first bucket only
        needs = [b.engine.get_device_memory_size_for_profile_v2(k) for b in loaded for k in b.contexts]
        assert scratch.capacity == max(needs)
        at_load = sum(b.engine.device_memory_size_v2 for b in loaded)  # 641d8cd: each stage's largest, at load
        assert scratch.capacity < at_load
        many = [f"class {i}" for i in range(36)]  # the second bucket (33-40)
        shape = (36, pipe.manifest.num_templates, pipe.manifest.embed_dim)
        pipe.set_vocabulary(many, embeddings=np.ones(shape, np.float32), normalize=False)
        pipe(IMAGE)
        assert 1 in pipe.backends["cost"].contexts
        needs = [b.engine.get_device_memory_size_for_profile_v2(k) for b in loaded for k in b.contexts]
        assert scratch.capacity == max(needs)
    assert env.gpu.used == 0  # closing freed every device buffer


def test_outputs_refuse_use_after_their_stage_ran_again(engines, monkeypatch, tiny_artifacts):
    """Defect 8: at 641d8cd a grown buffer freed the memory an earlier output still pointed to. A
    `DeviceArray` now checks its buffer's version, so a stale one raises instead of reading freed memory."""
    install(monkeypatch, "10.3")
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", options=BackendOptions(precision="fp32")) as pipe:
        cost = pipe.backends["cost"]
        feeds = {t.name: np.zeros([2 if isinstance(d, str) else d for d in t.shape], t.dtype)
                 for t in cost.spec.inputs}
        first = cost.run(feeds)["embedding"]
        bigger = {**feeds, "text": np.zeros((30, *feeds["text"].shape[1:]), np.float32)}
        cost.run(bigger)
        with pytest.raises(BackendError, match="overwritten or freed since it was made"):
            cost.to_host(first)


def test_the_fake_gpu_faults_on_freed_memory():
    """The double can fail: reading memory after it was freed is a fault (what a dangling pointer is)."""
    gpu = FakeGpu()
    address = gpu.malloc(1024)
    gpu.free(address)
    with pytest.raises(GpuFault):
        gpu.view(address, 16)


@pytest.mark.parametrize("layer", ["cuda-python", "pycuda"])
def test_pipeline_from_another_thread(engines, monkeypatch, layer):
    """Defect 2: at 641d8cd the pycuda context was pushed on the loading thread only, so a pipeline
    used from a web server's worker thread had no context there. Both layers now work from any thread,
    and two threads at once get the sequential results."""
    env = install(monkeypatch, "10.3", layer=layer)
    want = _run(engines["10.3"], "tensorrt", "fp32")
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", topk=2, options=FP32) as pipe:
        pipe.set_vocabulary(NAMES, show_progress=False)
        results, errors = [], []

        def work():
            try:
                results.append(pipe(IMAGE))
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for got in results:
        np.testing.assert_array_equal(got.scores, want.scores)
    if env.layer == "pycuda":
        assert all(depth == 0 for depth in context_stacks().values())


def test_pycuda_stack_is_empty_after_a_failed_load(engines, monkeypatch, tmp_path):
    """Defect 2: at 641d8cd a load that failed after the context push left it on the stack (abort at exit)."""
    install(monkeypatch, "10.3", layer="pycuda")
    folder = tmp_path / "tiny"
    shutil.copytree(engines["10.3"], folder)
    for engine in (folder / "engines").glob("decoder2.*.engine"):
        engine.write_bytes(b"not an engine")
    with pytest.raises(BackendError, match="could not deserialise .*Magic tag does not match"):
        Pipeline.from_artifacts(folder, backend="tensorrt", options=BackendOptions(precision="fp32"))
    assert all(depth == 0 for depth in context_stacks().values())


UNCLOSED = """
import sys
sys.path.insert(0, {tests!r})
from fakes.install import install_globally
env = install_globally("10.3", layer="pycuda")
import numpy as np
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.backends.options import TensorrtOptions
pipe = Pipeline.from_artifacts({folder!r}, backend="tensorrt", options=TensorrtOptions(precision="fp32"))
pipe.set_vocabulary({names!r}, show_progress=False)
pipe(np.zeros((40, 50, 3), np.uint8))
if {leak!r}:
    env.gpu_context = sys.modules["pycuda.driver"].Device(0).retain_primary_context()
    env.gpu_context.push()  # what 641d8cd's CudaContext did at load, never popped
print("done")
"""


@pytest.mark.parametrize("leak", [False, True], ids=["never-closed", "control-leaked-push"])
def test_a_pipeline_never_closed_exits_cleanly(engines, leak):
    """Defect 2: the README's Python example never closes its pipeline; with pycuda that aborted the
    interpreter at exit ("context stack was not empty"). The control run leaves a pushed context, as
    641d8cd did, and must abort: proof that the double detects it."""
    script = UNCLOSED.format(tests=str(Path(__file__).resolve().parents[1]), folder=str(engines["10.3"]),
                             names=NAMES, leak=leak)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert "done" in done.stdout, done.stderr
    if leak:
        assert done.returncode != 0 and "context stack was not empty" in done.stderr
    else:
        assert done.returncode == 0 and "PyCUDA ERROR" not in done.stderr, done.stderr


@pytest.mark.parametrize("layer", ["cuda-python", "pycuda"])
def test_no_driver_initialisation_per_copy(engines, monkeypatch, layer):
    """Defect 8: at 641d8cd every copy called pycuda's init() (cuInit) and a requirement check."""
    env = install(monkeypatch, "10.3", layer=layer)
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", topk=2, options=FP32) as pipe:
        pipe.set_vocabulary(NAMES, show_progress=False)
        pipe(IMAGE)
        inits = env.gpu.counters["init"]
        copies = env.gpu.counters["h2d"] + env.gpu.counters["d2h"]
        pipe(IMAGE)
        assert env.gpu.counters["h2d"] + env.gpu.counters["d2h"] > copies
        assert env.gpu.counters["init"] == inits


def test_out_of_device_memory_is_one_line(engines, monkeypatch):
    install(monkeypatch, "10.3", gpu=FakeGpu(memory=200_000))
    with pytest.raises(DeviceMemoryError) as info:
        _run(engines["10.3"], "tensorrt", "fp32")
    message = str(info.value)
    assert "\n" not in message and message.startswith("out of GPU memory: ") and "MB of 0 MB free" in message


def test_cuda_graphs_replay_and_recapture(engines, monkeypatch):
    """Once the buffers have settled (the first image grows the shared scratch area, which moves it),
    every stage replays its graph; a new class count captures anew (a graph freezes shapes and
    addresses); results equal the plain path."""
    env = install(monkeypatch, "10.3")
    want = _run(engines["10.3"], "tensorrt", "fp32")
    with Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", topk=2, options=GRAPHS) as pipe:
        pipe.set_vocabulary(NAMES, show_progress=False)
        first = pipe(IMAGE)
        pipe(IMAGE)
        captures, launches = env.gpu.counters["capture"], env.gpu.counters["graph_launch"]
        second = pipe(IMAGE)
        assert env.gpu.counters["capture"] == captures and env.gpu.counters["graph_launch"] == launches + 5
        np.testing.assert_array_equal(first.scores, want.scores)
        np.testing.assert_array_equal(second.scores, want.scores)
        pipe.set_vocabulary(NAMES[:3], show_progress=False)
        third = pipe(IMAGE)
        assert env.gpu.counters["capture"] > captures
    reference = _run(engines["10.3"], "ort", "fp32", names=NAMES[:3])
    np.testing.assert_allclose(third.scores, reference.scores, atol=1e-6)


def test_cuda_graphs_need_the_cuda_python_layer(engines, monkeypatch):
    install(monkeypatch, "10.3", layer="pycuda")
    with pytest.raises(BackendError, match="CUDA graphs need the cuda-python memory layer, this is pycuda"):
        Pipeline.from_artifacts(engines["10.3"], backend="tensorrt", options=GRAPHS)


def test_gpu_timing_reads_cuda_events(engines, monkeypatch):
    """Stage times from events on the stream: the fake clock advances 1 ms per piece of GPU work, so the
    image encoder's time is its image copy plus its enqueue (2 ms), never a host clock reading."""
    install(monkeypatch, "10.3")
    result = _run(engines["10.3"], "tensorrt", "fp32", gpu_timing=True)
    assert result.timings["image_encoder"] == pytest.approx(0.002)
    assert result.timings["decoder1"] == pytest.approx(0.002)  # keep copied up, then the enqueue


def test_int8_engines_run_the_export_int8_graphs(tiny_int8, tmp_path, monkeypatch):
    """int8 engines (built strongly typed from the Q/DQ graphs) run in the pipeline: the double computes
    the symmetric graph as written, ONNX Runtime its uint8 form, which is the same Q/DQ arithmetic up to
    the integer kernels' requantization rounding (tests/runtime/test_qdq.py: 3 steps of 1/127); sigmoid
    scores of all classes (CER off, so both decode the same classes) agree within 0.05."""
    folder = tmp_path / "tiny"
    shutil.copytree(tiny_int8[0], folder)
    install(monkeypatch, "11")
    build_artifacts(BuildOptions(folder=folder, precision="int8", max_classes=40, quiet=True), say=lambda line: None)
    got = _run(folder, "tensorrt", "int8", cer=False)
    want = _run(folder, "ort", "int8", cer=False)
    assert got.engines["image_encoder"].startswith("tensorrt int8 (image_encoder.int8.")
    assert [k.tolist() for k in got.kept] == [k.tolist() for k in want.kept]
    np.testing.assert_allclose(got.scores, want.scores, rtol=0, atol=0.05)
    assert not np.array_equal(got.scores, _run(folder, "ort", "fp32", cer=False).scores)
