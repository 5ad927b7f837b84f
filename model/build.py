"""`build_sed`: the public way to get a ready SED module, from a checkpoint or seeded random weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from sed_deploy.core.manifest import file_sha256

from .checkpoint import check_state_dict, read_checkpoint
from .config import get_config
from .sed import SED


class RandomWeightsWarning(UserWarning):
    """SED was built without a checkpoint: everything runs, but the masks mean nothing."""


def build_sed(backbone: str, checkpoint: str | Path | None = None, seed: int = 0, attention_pooling: int = 1) -> SED:
    """Build SED in eval mode.

    Args:
        backbone: "B", "L" or "tiny".
        checkpoint: an official detectron2 `.pth` or a plain state_dict file. Without one the
            weights are random (seeded), and a `RandomWeightsWarning` is issued.
        seed: seed of the random initialisation (also used under a checkpoint, where it is moot).
        attention_pooling: p x p pooling of the class attention: 1 (default) the published
            evaluation, 2 the official configs and demo; no weight depends on it.

    Returns:
        The model, with `model.weights` describing where its weights came from.
    """
    config = get_config(backbone, attention_pooling)
    state = read_checkpoint(checkpoint) if checkpoint is not None else None  # a bad file fails before the build
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SED(config)
    if checkpoint is None:
        warnings.warn(
            f"SED-{backbone} has RANDOM weights (seed {seed}): export, engines and latency are real, "
            "but the masks are meaningless. Pass a trained checkpoint (model_final.pth) for real masks.",
            RandomWeightsWarning,
            stacklevel=2,
        )
        model.weights = {"weights": "random", "seed": seed}
    else:
        check_state_dict(state, model.state_dict(), backbone)
        model.load_state_dict(state, strict=True)
        model.weights = {
            "weights": "checkpoint",
            "path": str(Path(checkpoint).resolve()),
            "sha256": file_sha256(checkpoint),
        }
    return model.eval().requires_grad_(False)
