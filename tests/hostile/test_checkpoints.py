"""Hostile checkpoints: not checkpoints at all, odd contents, malicious pickles, the wrong backbone; one line each."""

from __future__ import annotations

import os
import pickle
import zipfile

import pytest
import torch
from PIL import Image

from sed_deploy.core.errors import CheckpointError
from sed_deploy.export.artifacts import ExportOptions, current_manifest
from sed_deploy.export.cli import main as export
from sed_deploy.model import build_sed

from .conftest import cli, one_error_line


class _Payload:
    """Unpickling this runs a command that would create a file: the loader must refuse it."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _make(folder, tiny_state):
    """name -> substring of the error; every file generated here."""
    (folder / "text.pth").write_text("this is a text file, not weights\n")
    Image.new("RGB", (8, 8)).save(folder / "image.pth", format="PNG")
    (folder / "empty.pth").write_bytes(b"")
    (folder / "dir.pth").mkdir()
    torch.save({1: torch.zeros(2)}, folder / "int_keys.pth")
    torch.save({("a", 1): torch.zeros(2)}, folder / "tuple_keys.pth")
    torch.save({"model": {"w": torch.empty(3, device="meta")}}, folder / "meta.pth")
    torch.save({"w": torch.zeros(2).to_sparse()}, folder / "sparse.pth")
    torch.save([torch.zeros(1)], folder / "list.pth")
    torch.save({"model": "weights"}, folder / "model_text.pth")
    torch.save({"w": "not a tensor"}, folder / "strings.pth")
    with zipfile.ZipFile(folder / "zip.pth", "w") as archive:
        archive.writestr("readme.txt", "not torch")
    _Payload.marker = str(folder / "pwned")
    with open(folder / "evil.pth", "wb") as f:
        pickle.dump({"model": _Payload()}, f, protocol=4)
    torch.save({"model": {"x": _Payload()}}, folder / "evil_zip.pth")
    wrong = dict(tiny_state)
    wrong["clip_model.text_projection"] = torch.zeros(32, 40)
    torch.save({"model": {f"sem_seg_head.predictor.{k}": v for k, v in wrong.items()}}, folder / "wrong_shape.pth")
    integer = {k: (v.to(torch.int64) if k == "clip_model.text_projection" else v) for k, v in tiny_state.items()}
    torch.save(integer, folder / "integer.pth")
    return {
        "text.pth": "is not a PyTorch checkpoint: it is a text file",
        "image.pth": "is not a PyTorch checkpoint: it is a PNG image",
        "empty.pth": "it is an empty file",
        "dir.pth": "is not a regular file",
        "missing.pth": "does not exist",
        "int_keys.pth": "expected a state_dict with text keys, got 1 key(s) of type int",
        "tuple_keys.pth": "of type tuple",
        "meta.pth": "tensors without usable values (meta",
        "sparse.pth": "tensors without usable values",
        "list.pth": "expected a state_dict (a dict of tensors), got list",
        "model_text.pth": "got str",
        "strings.pth": "non-tensor entries",
        "zip.pth": "damaged or not a PyTorch file",
        "evil.pth": "not unpickled for safety",
        "evil_zip.pth": "not unpickled for safety",
        "wrong_shape.pth": "1 shape mismatch(es), e.g. ['clip_model.text_projection [32, 40]",
        "integer.pth": "wrong kind (integer for float)",
    }


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_model):
    folder = tmp_path_factory.mktemp("checkpoints")
    return folder, _make(folder, tiny_model.state_dict())


def test_every_odd_checkpoint_is_one_checkpoint_error(checkpoints):
    folder, cases = checkpoints
    for name, message in cases.items():
        with pytest.raises(CheckpointError) as info:
            build_sed("tiny", checkpoint=folder / name)
        assert message in str(info.value), (name, str(info.value))
        assert "\n" not in str(info.value)
    assert not (folder / "pwned").exists()  # no code ran


def test_sed_export_with_a_text_checkpoint_and_reuse_without_one(checkpoints, tmp_path, capsys):
    folder, _ = checkpoints
    for name, message in (("text.pth", "it is a text file"), ("image.pth", "it is a PNG image")):
        outcome = cli(export, ["--backbone", "tiny", "--checkpoint", folder / name, "-o", tmp_path / "a"], capsys)
        assert "unsafe" not in one_error_line(outcome, message)
    for name, message in (("missing.pth", "does not exist"), ("dir.pth", "not a file")):
        outcome = cli(export, ["--backbone", "tiny", "--checkpoint", folder / name, "--reuse",
                               "-o", tmp_path / "b"], capsys)
        one_error_line(outcome, message)
    assert not [p for p in (tmp_path / "a").iterdir()]  # nothing staged is left behind
    with pytest.raises(CheckpointError, match="does not exist"):
        current_manifest(ExportOptions(backbone="tiny", output=tmp_path / "b", checkpoint=folder / "missing.pth"))
