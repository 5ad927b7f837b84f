"""Reading SED checkpoints: the official detectron2 `.pth` and plain state_dicts.

A detectron2 checkpoint is a dict whose `model` entry is the state_dict, with every key prefixed
`sem_seg_head.predictor.` (spec section 9); a plain state_dict has the names below that prefix.
Checkpoints are pickles, so they are always read with `torch.load(..., weights_only=True)`: tensors
and plain containers only, never arbitrary code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from sed_deploy.runtime.errors import CheckpointError, first_line

OFFICIAL_PREFIX = "sem_seg_head.predictor."
_SHOWN = 5  # offending keys listed in an error


def checkpoint_filter_fn(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The SED state_dict inside a loaded checkpoint, with official names below the prefix.

    Pure function: accepts a detectron2 checkpoint ({"model": state_dict, ...}) or a state_dict,
    with or without the `sem_seg_head.predictor.` prefix.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise CheckpointError(f"expected a state_dict (a dict of tensors), got {type(state).__name__}")
    return {
        (key[len(OFFICIAL_PREFIX):] if key.startswith(OFFICIAL_PREFIX) else key): value
        for key, value in state.items()
    }


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load `path` safely and return its SED state_dict (official names, no prefix)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers, and is not "
            f"unpickled for safety ({first_line(exc)}); re-save its state_dict with torch.save"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(exc)}") from None
    state = checkpoint_filter_fn(loaded)
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path} has non-tensor entries, e.g. {bad[:_SHOWN]}")
    return state


def check_state_dict(
    state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], backbone: str
) -> None:
    """Raise `CheckpointError` unless `state` has exactly the keys and shapes of `expected`."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {list(state[k].shape)} (expected {list(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    hint = _backbone_hint(state, expected, backbone)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[:_SHOWN]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:_SHOWN]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:_SHOWN]}")
    raise CheckpointError(f"checkpoint does not fit SED-{backbone}: " + "; ".join(parts) + hint)


def _backbone_hint(state: dict, expected: dict, backbone: str) -> str:
    key = "clip_model.text_projection"
    if key in state and key in expected and state[key].shape != expected[key].shape:
        width = state[key].shape[-1]
        other = {640: "B", 768: "L"}.get(width)
        if other and other != backbone:
            return f" (its embedding width {width} is SED-{other}'s: use --backbone {other})"
    return ""

