"""Text embeddings of a vocabulary with the PyTorch model (see `runtime.text_encoding` for the steps).

This module brings open_clip's tokenizer and the model's text tower to the shared, torch-free
procedure: prompts, length-sorted truncated batches, synonym pooling, cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from sed_deploy.runtime import text_encoding
from sed_deploy.runtime.embedding_cache import EmbeddingCache
from sed_deploy.runtime.optional import require

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
    """`text_encoding.EncodeBatch` running the model's text tower."""

    @torch.inference_mode()
    def encode(tokens: np.ndarray) -> np.ndarray:
        return model.encode_text(torch.from_numpy(tokens)).numpy()

    return encode


def encode_prompts(
    model: SED, tokens: np.ndarray, batch_size: int = 256, truncate: bool = True, show_progress: bool = True
) -> np.ndarray:
    """Unit text embeddings of [M,77] token rows, [M,D]; batches sorted by length and truncated."""
    return text_encoding.encode_token_rows(tokens, torch_encoder(model), batch_size, truncate, show_progress)


def embed_vocabulary(
    model: SED,
    names: Sequence[str],
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    truncate: bool = True,
    show_progress: bool = True,
) -> torch.Tensor:
    """Text embeddings of a vocabulary, [T,P,D] float32, from the cache when present.

    Args:
        model: the SED model whose text tower encodes the prompts.
        names: class names (", " separates synonyms).
        cache: where to look up and store the result; None computes without caching.
        batch_size: prompts per text-tower call.
        truncate: cut each batch to its longest prompt (exact; False runs all 77 positions).
        show_progress: progress bar on stderr.
    """
    digest = text_weights_digest(model) if cache is not None else ""
    result = text_encoding.embed_names(
        names, tokenize, torch_encoder(model), digest, model.config.num_templates, cache,
        batch_size, truncate, show_progress,
    )
    return torch.from_numpy(result)
