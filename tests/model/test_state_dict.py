"""The state_dict of B and L has exactly the official key names and shapes (spec section 9)."""

import json
from pathlib import Path

import pytest
import torch

from sed_deploy.core.errors import ConfigError
from sed_deploy.model import CONFIGS, get_config
from sed_deploy.model.sed import SED

SPEC_KEYS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "official_state_dict_keys.json"


def _official_keys() -> dict:
    for candidate in (SPEC_KEYS, Path("/work/shared/reference/official_state_dict_keys.json")):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    pytest.fail("shared/reference/official_state_dict_keys.json not found")


@pytest.mark.parametrize("backbone,count", [("B", 608), ("L", 658)])
def test_keys_and_shapes_match_official(backbone, count):
    with torch.device("meta"):  # shapes only, no memory
        model = SED(get_config(backbone))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    official = _official_keys()[backbone]
    assert len(official) == count
    assert sorted(ours) == sorted(official)
    assert {k: v for k, v in ours.items() if official[k] != v} == {}


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown backbone 'XL'; expected one of B, L, tiny"):
        get_config("XL")


def test_tiny_is_small_and_same_structure():
    tiny = CONFIGS["tiny"]
    assert tiny.image_size % 32 == 0 and tiny.feature_size == tiny.image_size // 32
    with torch.device("meta"):
        model = SED(tiny)
    b_head = {k for k in _official_keys()["B"] if k.startswith("transformer.")}
    assert {k for k in model.state_dict() if k.startswith("transformer.")} == b_head
