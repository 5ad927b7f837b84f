"""The model repository for NVIDIA's Triton container: every config.pbtxt parses as Triton's
ModelConfig; TensorRT plans replace the graphs when engines exist; the BLS model `sed` runs the
CER loop against a strict fake of triton_python_backend_utils whose stage models are the
repository's ONNX files on ONNX Runtime, and matches the local Pipeline bit for bit."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from sed_deploy.core.contract import STAGE_ORDER
from sed_deploy.core.errors import ConfigError
from sed_deploy.core.fileio import write_json
from sed_deploy.runtime.backends.onnxruntime import OrtBackend
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.engine_cache import EngineRecord, Environment, engine_path
from sed_deploy.runtime.pipeline import Pipeline
from tests.conftest import ARTIFACTS_VOCAB

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs the serve extra (tritonclient)")

from sed_deploy.serve.handler import Limits  # noqa: E402
from sed_deploy.serve.repository import parse_config, write_repository  # noqa: E402

from . import fake_pb_utils  # noqa: E402


@pytest.fixture(scope="module")
def repository(tiny_artifacts, tmp_path_factory):
    folder, _ = tiny_artifacts
    out = tmp_path_factory.mktemp("repo") / "models"
    write_repository(folder, out, instances=2, limits=Limits(max_classes=30, max_pixels=500_000),
                     say=lambda message: None)
    return out


def test_every_config_parses_as_model_config(repository, tiny_artifacts):
    _, manifest = tiny_artifacts
    assert sorted(p.name for p in repository.iterdir()) == sorted([*STAGE_ORDER, "sed"])
    for stage in STAGE_ORDER:
        config = parse_config(repository / stage / "config.pbtxt")
        spec = manifest.stages[stage]
        assert config.name == stage and config.platform == "onnxruntime_onnx" and config.max_batch_size == 0
        assert [i.name for i in config.input] == [t.name for t in spec.inputs]
        for tensor, written in zip(spec.inputs + spec.outputs, list(config.input) + list(config.output), strict=True):
            assert list(written.dims) == [d if isinstance(d, int) else -1 for d in tensor.shape]
        assert (repository / stage / "1" / "model.onnx").read_bytes() == (tiny_artifacts[0] / spec.file).read_bytes()
    text = parse_config(repository / "text_encoder" / "config.pbtxt")
    assert [list(i.dims) for i in text.input] == [[-1, -1]]  # tokens [M,L]
    sed = parse_config(repository / "sed" / "config.pbtxt")
    assert sed.backend == "python" and sed.instance_group[0].count == 2
    assert {i.name: (list(i.dims), i.optional) for i in sed.input} == {
        "image": ([1], False), "classes": ([-1], True), "topk": ([1], True)}
    assert {o.name: list(o.dims) for o in sed.output} == {"labels": [-1, -1], "result": [1]}
    assert sed.parameters["max_classes"].string_value == "30"
    assert json.loads((repository / "sed" / "1" / "artifacts" / "vocabulary.json").read_text()) == ARTIFACTS_VOCAB


def test_the_parser_refuses_a_broken_config(tmp_path):
    from google.protobuf.text_format import ParseError

    (tmp_path / "config.pbtxt").write_text('name: "x"\ninput { name: "a" data_type: TYPE_FLOAT32 dims: 1 }\n')
    with pytest.raises(ParseError):
        parse_config(tmp_path / "config.pbtxt")


def test_an_existing_folder_is_never_overwritten(tiny_artifacts, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="exists and is not empty"):
        write_repository(tiny_artifacts[0], tmp_path / "models", say=lambda m: None)
    assert (tmp_path / "models" / "mine.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["models"]  # no staging folder left


def test_tensorrt_plans_when_every_stage_has_an_engine(tiny_artifacts, tmp_path):
    source, manifest = tiny_artifacts
    folder = tmp_path / "artifacts"
    shutil.copytree(source, folder, copy_function=os.link)
    environment = Environment(tensorrt="10.13.0", gpu="NVIDIA L4", compute_capability="8.9")
    plan = [{"x": [[1], [8], [32]]}, {"x": [[33], [64], [128]]}, {"x": [[129], [459], [1024]]}]
    for stage, spec in manifest.stages.items():
        path = engine_path(folder, stage, "fp16", f"{stage:0<64}")
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(f"engine of {stage}".encode())
        record = EngineRecord(stage, "fp16", f"{stage:0<64}", spec.sha256, environment, plan,
                              str(path.relative_to(folder)))
        write_json(path.with_name(path.name + ".json"), record.to_dict())
    said = []
    out = write_repository(folder, tmp_path / "models", say=said.append)
    for stage in STAGE_ORDER:
        config = parse_config(out / stage / "config.pbtxt")
        assert config.platform == "tensorrt_plan" and config.default_model_filename == "model.plan"
        assert list(config.instance_group[0].profile) == ["0", "1", "2"]
        assert (out / stage / "1" / "model.plan").read_bytes() == f"engine of {stage}".encode()
    assert "TensorRT 10.13.0 for NVIDIA L4" in said[0]


@pytest.fixture(scope="module")
def bls_model(repository, tiny_artifacts, monkeypatch_module):
    """The repository's model.py, loaded with the fake pb_utils; stage models on ONNX Runtime."""
    _, manifest = tiny_artifacts
    monkeypatch_module.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils)
    server = fake_pb_utils.FakeServer()
    monkeypatch_module.setattr(fake_pb_utils, "SERVER", server)
    for stage in STAGE_ORDER:
        spec = dataclasses.replace(manifest.stages[stage], file="model.onnx")
        backend = OrtBackend(spec, repository / stage / "1", manifest, BackendOptions(threads=1)).load()
        server.register(parse_config(repository / stage / "config.pbtxt"), backend.run)
    spec = importlib.util.spec_from_file_location("sed_bls_model", repository / "sed" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = parse_config(repository / "sed" / "config.pbtxt")
    from google.protobuf.json_format import MessageToDict

    model = module.TritonPythonModel()
    model.initialize({"model_config": json.dumps(MessageToDict(config, preserving_proto_field_name=True)),
                      "model_repository": str(repository / "sed"), "model_version": "1", "model_name": "sed",
                      "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    return model, server


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def _request(image: bytes | None, classes=None, topk=None):
    tensors = []
    if image is not None:
        tensors.append(fake_pb_utils.Tensor("image", np.array([image], dtype=object)))
    if classes is not None:
        tensors.append(fake_pb_utils.Tensor("classes", np.array([c.encode() for c in classes], dtype=object)))
    if topk is not None:
        tensors.append(fake_pb_utils.Tensor("topk", np.array([topk], dtype=np.int32)))
    return fake_pb_utils.InferenceRequest("sed", ["labels", "result"], tensors)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_bls_model_matches_the_pipeline_bit_for_bit(bls_model, tiny_artifacts):
    model, server = bls_model
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (30 + 11 * i, 40 + 3 * i, 3), dtype=np.uint8) for i in range(3)]
    local = Pipeline.from_artifacts(tiny_artifacts[0], backend="ort", options=BackendOptions(threads=1))
    cases = [(None, None), (["cat", "road", "sky", "grass", "car", "person"], 1), (None, 2),
             (["water", "boat"], None)]
    pruned = False
    for step, (names, topk) in enumerate(cases):
        server.calls.clear()
        image = images[step % len(images)]
        (response,) = model.execute([_request(_png(image), names, topk)])
        assert not response.has_error(), response.error().message()
        labels = fake_pb_utils.get_output_tensor_by_name(response, "labels").as_numpy()
        result = json.loads(fake_pb_utils.get_output_tensor_by_name(response, "result").as_numpy()[0])
        local.topk = topk or 8
        local.set_vocabulary(names or ARTIFACTS_VOCAB, show_progress=False)
        expected = local(image)
        assert np.array_equal(labels, expected.labels), step
        assert result["names"] == (names or ARTIFACTS_VOCAB) and result["backend"] == "triton-bls"
        image_calls = [c for c in server.calls if c[0] != "text_encoder"]
        assert [c[0] for c in image_calls] == ["image_encoder", "cost", "decoder1", "decoder2", "decoder3"]
        keeps = [c[1]["keep"][0] for c in image_calls[2:]]
        assert keeps == [len(k) for k in expected.kept]
        pruned = pruned or min(keeps) < len(names or ARTIFACTS_VOCAB)
    assert pruned, "no request pruned a class: the CER loop was not exercised"
    encoded = [c for c in server.calls if c[0] == "text_encoder"]
    server.calls.clear()
    model.execute([_request(_png(images[0]), ["water", "boat"])])
    assert not [c for c in server.calls if c[0] == "text_encoder"] and encoded  # cached after the first time


def test_bad_requests_get_one_line_and_their_neighbours_succeed(bls_model):
    model, _ = bls_model
    good = _png(np.full((20, 30, 3), 90, np.uint8))
    big = _png(np.zeros((1000, 600, 3), np.uint8))
    requests = [_request(b"not an image"), _request(good), _request(None, topk=2), _request(good, [" "]),
                _request(good, topk=99), _request(good, [f"c{i}" for i in range(31)]), _request(big),
                _request(good, ["sky"])]
    responses = model.execute(requests)
    assert len(responses) == len(requests)
    errors = {i: r.error() for i, r in enumerate(responses) if r.has_error()}
    assert sorted(errors) == [0, 2, 3, 4, 5, 6]
    assert all(e.code() == fake_pb_utils.TritonError.INVALID_ARG and "\n" not in e.message() for e in errors.values())
    assert errors[0].message().startswith("image: not an image")
    assert errors[2].message().startswith("image: missing")
    assert errors[5].message().startswith("classes: 31 names")
    assert errors[6].message().startswith("image: 600x1000 = 600,000 pixels")
    assert fake_pb_utils.get_output_tensor_by_name(responses[7], "labels").as_numpy().shape == (20, 30)


def test_a_failing_stage_is_one_internal_error(bls_model, monkeypatch):
    model, server = bls_model
    config, _ = server.models["decoder2"]

    def out_of_memory(feeds):
        raise MemoryError("CUDA out of memory (pretend)")

    monkeypatch.setitem(server.models, "decoder2", (config, out_of_memory))
    monkeypatch.setattr(server, "infer", _failing_infer(server))
    (response,) = model.execute([_request(_png(np.zeros((9, 9, 3), np.uint8)))])
    assert response.error().code() == fake_pb_utils.TritonError.INTERNAL
    assert response.error().message() == "stage decoder2: MemoryError: CUDA out of memory (pretend)"


def _failing_infer(server):
    original = type(server).infer

    def infer(request):
        try:
            return original(server, request)
        except Exception as exc:  # what Triton does with a backend failure: an error response
            return fake_pb_utils.InferenceResponse(error=fake_pb_utils.TritonError(f"{type(exc).__name__}: {exc}"))

    return infer
