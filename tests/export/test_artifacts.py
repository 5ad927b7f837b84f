"""Manifest schema, interrupted exports, and sed-export's errors."""

import json

import pytest

from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.manifest import FORMAT_VERSION, Manifest
from sed_deploy.export import artifacts as artifacts_module
from sed_deploy.export.artifacts import ExportOptions, export_artifacts
from sed_deploy.export.cli import main


def test_manifest_round_trip(tiny_artifacts, tmp_path):
    _, manifest = tiny_artifacts
    manifest.save(tmp_path)
    assert Manifest.load(tmp_path).to_dict() == manifest.to_dict()


def test_future_manifest_is_refused(tiny_artifacts, tmp_path):
    _, manifest = tiny_artifacts
    data = manifest.to_dict()
    data["format_version"] = FORMAT_VERSION + 1
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=f"format version {FORMAT_VERSION + 1}, newer than this sed-deploy reads"):
        Manifest.load(tmp_path)


def test_tampered_graph_is_detected(tiny_artifacts, tmp_path):
    out, manifest = tiny_artifacts
    for spec in manifest.stages.values():
        (tmp_path / spec.file).write_bytes((out / spec.file).read_bytes())
    (tmp_path / "cost.onnx").write_bytes(b"truncated")
    with pytest.raises(ArtifactError, match="stage cost: .* does not match the manifest"):
        manifest.verify_files(tmp_path)
    (tmp_path / "decoder3.onnx").unlink()
    with pytest.raises(ArtifactError, match="decoder3.onnx is missing"):
        manifest.verify_files(tmp_path, ("decoder3",))


def test_interrupted_export_leaves_previous_artifacts_intact(tiny_artifacts, tmp_path, monkeypatch):
    out = tmp_path / "tiny"
    export_artifacts(ExportOptions(backbone="tiny", output=out, quiet=True, class_counts=(2,)))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    real = artifacts_module.validate_stage

    def failing(stage, *args, **kwargs):
        if stage.CONTRACT.name == "decoder2":
            raise KeyboardInterrupt
        return real(stage, *args, **kwargs)

    monkeypatch.setattr(artifacts_module, "validate_stage", failing)
    with pytest.raises(KeyboardInterrupt):
        export_artifacts(ExportOptions(backbone="tiny", output=out, quiet=True, class_counts=(2,), seed=1))
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    Manifest.load(out).verify_files(out)


def test_first_export_interrupted_leaves_no_manifest(tmp_path, monkeypatch):
    def failing(stage, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(artifacts_module, "validate_stage", failing)
    with pytest.raises(RuntimeError):
        export_artifacts(ExportOptions(backbone="tiny", output=tmp_path / "x", quiet=True))
    assert list((tmp_path / "x").iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["--checkpoint", "missing.pth"], "checkpoint missing.pth does not exist"),
    (["--vocab", "no-such-vocabulary"], "vocabulary 'no-such-vocabulary' is neither a file nor a known name"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    code = main(["--backbone", "tiny", "-o", str(tmp_path / "out"), "-q", *args])
    err = capsys.readouterr().err
    assert code == 1 and f"error: {message}" in err and "Traceback" not in err


def test_cli_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["--backbone", "tiny", "-o", str(blocker / "sub"), "-q"]) == 1
    assert "error: cannot write to" in capsys.readouterr().err


def test_cli_unknown_backbone(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--backbone", "XL", "-o", "x"])
    assert info.value.code == 2 and "invalid choice: 'XL'" in capsys.readouterr().err


def test_reuse_keeps_a_matching_folder_and_rejects_a_different_one(tiny_artifacts, capsys):
    out, _ = tiny_artifacts
    vocab = str(out.parent / "street.txt")
    assert main(["--backbone", "tiny", "--vocab", vocab, "--reuse", "-q", "-o", str(out)]) == 0
    assert "is up to date" in capsys.readouterr().out
    from sed_deploy.export.artifacts import current_manifest

    assert current_manifest(ExportOptions(backbone="tiny", output=out, vocab=vocab)) is not None
    assert current_manifest(ExportOptions(backbone="tiny", output=out, seed=1)) is None
    assert current_manifest(ExportOptions(backbone="tiny", output=out, topk=8)) is None
    assert current_manifest(ExportOptions(backbone="B", output=out)) is None
