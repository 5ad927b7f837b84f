"""Reading SED checkpoints: the official detectron2 `.pth` and plain state_dicts.

A detectron2 checkpoint is a dict whose `model` entry is the state_dict, with every key prefixed
`sem_seg_head.predictor.` (spec section 9); a plain state_dict has the names below that prefix.
Checkpoints are pickles, so they are always read with `torch.load(..., weights_only=True)`: tensors
and plain containers only, never arbitrary code.
"""

from __future__ import annotations

import os
import pickle
import stat
import warnings
from pathlib import Path

import torch

from sed_deploy.core.errors import CheckpointError, first_line

OFFICIAL_PREFIX = "sem_seg_head.predictor."
_SHOWN = 5  # offending keys listed in an error
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format; its legacy format is a pickle (first byte 0x80)
_IMAGE_MAGIC = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
                (b"RIFF", "WebP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def checkpoint_filter_fn(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The SED state_dict inside a loaded checkpoint, with official names below the prefix.

    Pure function: accepts a detectron2 checkpoint ({"model": state_dict, ...}) or a state_dict,
    with or without the `sem_seg_head.predictor.` prefix.
    """
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else checkpoint
    if not isinstance(state, dict):
        raise CheckpointError(f"expected a state_dict (a dict of tensors), got {type(state).__name__}")
    odd = [key for key in state if not isinstance(key, str)]
    if odd:
        raise CheckpointError(f"expected a state_dict with text keys, got {len(odd)} key(s) of type "
                              f"{type(odd[0]).__name__}, e.g. {odd[0]!r}"[:300])
    return {
        (key[len(OFFICIAL_PREFIX):] if key.startswith(OFFICIAL_PREFIX) else key): value
        for key, value in state.items()
    }


def describe_file(head: bytes) -> str:
    """What the first bytes of a file look like, for an error message."""
    if not head:
        return "an empty file"
    for magic, kind in _IMAGE_MAGIC:
        if head.startswith(magic):
            return f"a {kind} image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of another format"
    return "a text file" if all(c.isprintable() or c.isspace() for c in text) else "binary data of another format"


def _open_checkpoint(path: Path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(f"checkpoint {path} is not a regular file (a folder or a device?); give the .pth file")
    return os.fdopen(fd, "rb")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load `path` safely and return its SED state_dict (official names, no prefix).

    Only PyTorch's two formats are opened (a zip archive, or a pickle of protocol 2 or later, as
    detectron2 writes); anything else is named for what it looks like (a text file, an image).
    """
    path = Path(path)
    with _open_checkpoint(path) as f:
        head = f.read(16)
        if not (head.startswith(_ZIP_MAGIC) or head[:1] == b"\x80"):
            raise CheckpointError(f"checkpoint {path} is not a PyTorch checkpoint: it is {describe_file(head)}; "
                                  "give the model_final.pth of SED (see the README)")
        f.seek(0)
        loaded = _load(f, path)
    state = checkpoint_filter_fn(loaded)
    bad = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise CheckpointError(f"checkpoint {path} has non-tensor entries, e.g. {bad[:_SHOWN]}")
    odd = [key for key, value in state.items() if value.is_meta or value.layout != torch.strided
           or value.is_quantized or value.is_complex()]
    if odd:
        raise CheckpointError(f"checkpoint {path} has tensors without usable values (meta, sparse, quantized or "
                              f"complex), e.g. {odd[:_SHOWN]}; re-save it from a loaded model")
    return state


def _load(f, path: Path):
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4": torch's note to itself, not the user's
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            warnings.filterwarnings("ignore", message="Validating sparse tensor")
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "weights only" in str(exc).lower():
            raise CheckpointError(
                f"checkpoint {path} holds objects other than tensors and plain containers, and is not "
                f"unpickled for safety; re-save its state_dict with torch.save"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt ({first_line(exc)})") from None
    except MemoryError:
        raise CheckpointError(f"not enough memory to read checkpoint {path}") from None
    except Exception as exc:  # torch.load raises many types on damaged files (RuntimeError, KeyError, EOFError, ...)
        raise CheckpointError(f"cannot read checkpoint {path}: it is damaged or not a PyTorch file "
                              f"({type(exc).__name__}: {first_line(exc)})"[:400]) from None


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
    dtypes = [f"{k} {state[k].dtype}" for k in expected if k in state and state[k].shape == expected[k].shape
              and state[k].dtype.is_floating_point != expected[k].dtype.is_floating_point]
    if not (missing or unexpected or shapes or dtypes):
        return
    hint = _backbone_hint(state, expected, backbone)
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s), e.g. {missing[:_SHOWN]}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:_SHOWN]}")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[:_SHOWN]}")
    if dtypes:
        parts.append(f"{len(dtypes)} tensor(s) of the wrong kind (integer for float), e.g. {dtypes[:_SHOWN]}")
    raise CheckpointError(f"checkpoint does not fit SED-{backbone}: " + "; ".join(parts) + hint)


def _backbone_hint(state: dict, expected: dict, backbone: str) -> str:
    key = "clip_model.text_projection"
    if key in state and key in expected and state[key].shape != expected[key].shape:
        width = state[key].shape[-1]
        other = {640: "B", 768: "L"}.get(width)
        if other and other != backbone:
            return f" (its embedding width {width} is SED-{other}'s: use --backbone {other})"
    return ""

