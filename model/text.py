"""The PyTorch side of text: open_clip's tokenizer, the digest of the text tower's weights, and the
tower as a batch encoder (`export.text` runs it through the runtime's prompt procedure)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from sed_deploy.core.optional import require

from .sed import SED

TEXT_TOWER_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def tokenize(texts: Sequence[str]) -> np.ndarray:
    """CLIP BPE tokens of `texts` (open_clip's tokenizer, offline), [M,77] int64."""
    open_clip = require("open_clip", "tokenizing class names")
    return open_clip.tokenize(list(texts)).numpy()


def text_weights_digest(model: SED) -> str:
    """sha256 of the text tower's weights: the part of the model text embeddings depend on."""
    digest = hashlib.sha256()
    state = model.clip_model.state_dict()
    for name in sorted(k for k in state if k.startswith(TEXT_TOWER_PREFIXES)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


def torch_encoder(model: SED):
    """A batch encoder ([M,L] int64 tokens -> [M,D] unit embeddings) running the model's text tower."""

    @torch.inference_mode()
    def encode(tokens: np.ndarray) -> np.ndarray:
        return model.encode_text(torch.from_numpy(tokens)).numpy()

    return encode
