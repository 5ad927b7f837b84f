"""Checkpoint loading: detectron2 and plain forms, clear errors, weights_only honoured."""

import pytest
import torch
import torch.nn.functional as F

from sed_deploy.core.errors import CheckpointError
from sed_deploy.model import build_sed
from sed_deploy.model.checkpoint import OFFICIAL_PREFIX, check_state_dict, checkpoint_filter_fn, read_checkpoint


def _outputs(model):
    g = torch.Generator().manual_seed(0)
    image = torch.randn(1, 3, 128, 128, generator=g)
    text = F.normalize(torch.randn(3, 80, 32, generator=g), dim=-1)
    with torch.inference_mode():
        return model(image, text).final


@pytest.fixture(scope="module")
def source():
    return build_sed("tiny", seed=11)


def test_detectron2_checkpoint_round_trip(source, tmp_path):
    path = tmp_path / "model_final.pth"
    state = {OFFICIAL_PREFIX + k: v for k, v in source.state_dict().items()}
    torch.save({"model": state, "iteration": 79999, "scheduler": {"last_epoch": 3}}, path)
    loaded = build_sed("tiny", checkpoint=path, seed=0)
    assert torch.equal(_outputs(loaded), _outputs(source))
    assert loaded.weights["weights"] == "checkpoint" and len(loaded.weights["sha256"]) == 64


def test_plain_state_dict_loads(source, tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(source.state_dict(), path)
    assert torch.equal(_outputs(build_sed("tiny", checkpoint=path)), _outputs(source))


def test_missing_and_unexpected_keys_fail_with_the_first_few(source, tmp_path):
    state = dict(source.state_dict())
    del state["transformer.head0.weight"]
    state["transformer.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"1 missing key\(s\), e.g. \['transformer.head0.weight'\]; "
                                              r"1 unexpected key\(s\), e.g. \['transformer.extra.weight'\]"):
        build_sed("tiny", checkpoint=path)


def test_wrong_backbone_names_the_right_one():
    expected = {"clip_model.text_projection": torch.empty(640, 640)}
    with pytest.raises(CheckpointError, match="SED-L's: use --backbone L"):
        check_state_dict({"clip_model.text_projection": torch.empty(768, 768)}, expected, "B")


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("CODE FROM THE CHECKPOINT RAN",))


def test_weights_only_refuses_arbitrary_objects(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "extra": _RunsCodeWhenUnpickled()}, path)
    with pytest.raises(CheckpointError, match="not unpickled for safety"):
        read_checkpoint(path)
    assert "CODE FROM THE CHECKPOINT RAN" not in capsys.readouterr().out


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_unreadable_file_is_one_line(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pth") as info:
        read_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        build_sed("tiny", checkpoint=tmp_path / "nope.pth")


def test_filter_fn_strips_prefix_only_where_present():
    state = {OFFICIAL_PREFIX + "a": 1, "b": 2}
    assert checkpoint_filter_fn({"model": state}) == {"a": 1, "b": 2}
    assert checkpoint_filter_fn(state) == {"a": 1, "b": 2}
