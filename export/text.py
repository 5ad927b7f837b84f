"""Text embeddings of a vocabulary with the PyTorch model: the reference the text graph is checked against.

The model's text tower (`model.text`) run through the runtime's torch-free procedure
(`runtime.text_encoding`): prompts, length-sorted truncated batches, synonym pooling, cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sed_deploy.model.sed import SED
from sed_deploy.model.text import text_weights_digest, tokenize, torch_encoder
from sed_deploy.runtime import text_encoding
from sed_deploy.runtime.embedding_cache import EmbeddingCache


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
