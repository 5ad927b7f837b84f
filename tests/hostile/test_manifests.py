"""Tampered artifacts: manifest.json changed field by field, missing folders, damaged files; one line each."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.manifest_schema import STAGE_IO
from sed_deploy.runtime.segment_cli import main as segment

from .conftest import cli, digest, one_error_line


def _set(path: str, value):
    """A mutation that sets the field at a dotted path (`stages.cost.inputs.0.name`)."""
    def mutate(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return mutate


def _delete(path: str):
    def mutate(data):
        *parents, last = path.split(".")
        node = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        del node[int(last) if isinstance(node, list) else last]
    return mutate


def _stages_as_list(data):
    data["stages"] = list(data["stages"].values())


# mutation -> substring of the error
TAMPERED = {
    "stages as a list": (_stages_as_list, "stages: expected an object, got a list"),
    "a stage missing": (_delete("stages.decoder2"), "missing stage(s) decoder2"),
    "an unknown stage": (_set("stages.decoder4", {}), "unknown stage(s) decoder4"),
    "a renamed input": (_set("stages.decoder1.inputs.0.name", "kept"), "expected the inputs keep, embedding"),
    "a renamed output": (_set("stages.cost.outputs.2.name", "top"), "expected the outputs volume, embedding, topk0"),
    "an input removed": (_delete("stages.decoder3.inputs.1"), "expected the inputs keep, features2"),
    "a stage name": (_set("stages.cost.name", "decoder1"), "stages.cost.name: expected 'cost'"),
    "a float keep": (_set("stages.decoder2.inputs.0.dtype", "float32"), "expected int32 for keep"),
    "an unknown dtype": (_set("stages.cost.outputs.0.dtype", "complex64"), "dtype: expected float32"),
    "a bool in a shape": (_set("stages.cost.outputs.0.shape", [True, 80]), "shape: expected a list of sizes"),
    "a negative size": (_set("stages.image_encoder.outputs.0.shape", [1, -3]), "shape: expected a list of sizes"),
    "a file outside": (_set("stages.cost.file", "../../etc/passwd"), "expected a file inside the artifacts folder"),
    "an absolute file": (_set("stages.cost.file", "/etc/passwd"), "expected a file inside the artifacts folder"),
    "a short sha256": (_set("stages.cost.sha256", "abc"), "64 lower-case hex digits"),
    "a numeric sha256": (_set("stages.cost.sha256", 5), "sha256: expected text, got a whole number"),
    "inputs as text": (_set("stages.cost.inputs", "dense,text"), "inputs: expected a list, got text"),
    "opset as text": (_set("opset", "17"), "opset: expected a whole number, got text"),
    "topk as a bool": (_set("topk", True), "topk: expected a whole number, got true/false"),
    "topk zero": (_set("topk", 0), "topk: expected a whole number between 1 and 3839, got 0"),
    "default above topk": (_set("default_topk", 99), "default_topk: expected a whole number between 1 and 16"),
    "too many templates": (_set("num_templates", 81), "num_templates: expected a whole number between 1 and 80"),
    "context of 500": (_set("context_length", 500), "context_length"),
    "preprocessing missing": (_delete("preprocessing"), "preprocessing: missing"),
    "two means": (_set("preprocessing.mean", [1.0, 2.0]), "preprocessing.mean: expected 3 numbers"),
    "text means": (_set("preprocessing.std", ["a", "b", "c"]), "preprocessing.std: expected 3 numbers"),
    "a zero std": (_set("preprocessing.std", [1.0, 0.0, 1.0]), "expected 3 positive numbers"),
    "image size as text": (_set("preprocessing.image_size", "128"), "image_size: expected a whole number"),
    "image size changed": (_set("preprocessing.image_size", 256), "expected [1, 3, 256, 256]"),
    "short side above long": (_set("preprocessing.max_long_side", 10), "max_long_side: expected a whole number"),
    "an extra preprocessing field": (_set("preprocessing.gamma", 2.2), "unknown field(s) ['gamma']"),
    "tokenizer missing": (_delete("text.tokenizer"), "text.tokenizer: missing"),
    "format version as text": (_set("format_version", "1"), "no integer format_version"),
    "a newer format": (_set("format_version", 99), "format version 99, newer than"),
    "a variant that is text": (_set("stages.cost.variants", {"fp16": "cost.fp16.onnx"}), "expected an object"),
    "plugins as text": (_set("stages.decoder1.plugins", "sed::x"), "plugins: expected a list"),
}


@pytest.fixture
def good_manifest(tiny_artifacts) -> dict:
    artifacts, _ = tiny_artifacts
    return json.loads((artifacts / "manifest.json").read_text())


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_manifest_is_one_artifact_error(good_manifest, tmp_path, case):
    mutate, message = TAMPERED[case]
    data = copy.deepcopy(good_manifest)
    mutate(data)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")) as info:
        Manifest.load(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("content", [b"", b"[]", b"null", b"\xff\xfe{", b"[" * 100_000, b'{"format_version": 1}'])
def test_damaged_manifest_file(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ArtifactError) as info:
        Manifest.load(tmp_path)
    assert "\n" not in str(info.value) and "re-export" in str(info.value)


def test_the_runtime_contract_is_the_exporters():
    from sed_deploy.export.stages import STAGES

    assert {cls.CONTRACT.name: (cls.CONTRACT.inputs, cls.CONTRACT.outputs) for cls in STAGES} == STAGE_IO


def test_missing_or_odd_artifacts_folders(tmp_path):
    with pytest.raises(ArtifactError, match=r"artifacts folder .*nowhere does not exist"):
        Manifest.load(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ArtifactError, match="no manifest.json in .*plain: it is not an artifacts folder"):
        Manifest.load(tmp_path / "plain")
    (tmp_path / "odd" / "manifest.json").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="no manifest.json in"):
        Manifest.load(tmp_path / "odd")


def test_cli_on_tampered_artifacts(tiny_artifacts, good_manifest, vocab_file, tmp_path, capsys):
    from PIL import Image

    artifacts, _ = tiny_artifacts
    tampered = tmp_path / "tampered"
    shutil.copytree(artifacts, tampered)
    image = tmp_path / "a.png"
    Image.new("RGB", (16, 16)).save(image)
    data = copy.deepcopy(good_manifest)
    _set("stages.decoder1.inputs.0.name", "kept")(data)
    (tampered / "manifest.json").write_text(json.dumps(data))
    before = digest(tampered)
    outcome = cli(segment, ["--artifacts", tampered, "--vocab", vocab_file, image, "-o", tmp_path / "out"], capsys)
    one_error_line(outcome, "manifest.json: stages.decoder1.inputs")
    outcome = cli(segment, ["--artifacts", tmp_path / "missing", "--vocab", vocab_file, image,
                            "-o", tmp_path / "out"], capsys)
    one_error_line(outcome, "missing does not exist")
    (tampered / "manifest.json").write_text(json.dumps(good_manifest))
    (tampered / "tokenizer" / "bpe_simple_vocab_16e6.txt.gz").write_bytes(b"\x1f\x8bnot gzip")
    outcome = cli(segment, ["--artifacts", tampered, "--vocab", "new class,other class", image,
                            "-o", tmp_path / "out"], capsys)  # a vocabulary not cached: the tokenizer is read
    one_error_line(outcome, "cannot read the tokenizer merges file")
    assert digest(tmp_path / "out") == {} or not any(n.endswith(".png") for n in digest(tmp_path / "out"))
    assert set(digest(tampered)) == set(before)
