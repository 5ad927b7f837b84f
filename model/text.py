"""Text embeddings of a vocabulary: prompts, tokens, the (truncated) text tower and the cache.

For every class, its synonyms are put into the 80 templates, each prompt is encoded and
unit-normalised; with synonyms the embeddings are averaged per template and normalised again
(spec section 4). The result is [T,P,D]. Prompts are sorted by token length and encoded in batches
truncated to their longest prompt, which is exact because the text tower is causal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sed_deploy.runtime.embedding_cache import EmbeddingCache, embedding_key
from sed_deploy.runtime.optional import require
from sed_deploy.runtime.progress import progress
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES, check_names, expand_prompts, synonyms

from .clip import truncate_tokens
from .sed import SED

TEXT_TOWER_PREFIXES = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def tokenize(texts: Sequence[str]) -> torch.Tensor:
    """CLIP BPE tokens of `texts` (open_clip's tokenizer, offline), [M,77] int64."""
    open_clip = require("open_clip", "tokenizing class names")
    return open_clip.tokenize(list(texts))


def text_weights_digest(model: SED) -> str:
    """sha256 of the text tower's weights: the part of the model text embeddings depend on."""
    digest = hashlib.sha256()
    state = model.clip_model.state_dict()
    for name in sorted(k for k in state if k.startswith(TEXT_TOWER_PREFIXES)):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def encode_prompts(
    model: SED, tokens: torch.Tensor, batch_size: int = 256, truncate: bool = True, show_progress: bool = True
) -> torch.Tensor:
    """Unit text embeddings of [M,77] token rows, [M,D]; batches sorted by length and truncated."""
    order = torch.argsort(tokens.argmax(dim=-1), stable=True)
    out = torch.empty((tokens.shape[0], model.config.embed_dim), dtype=torch.float32)
    starts = range(0, tokens.shape[0], batch_size)
    for start in progress(starts, total=len(starts), desc="text encoder", enabled=show_progress):
        rows = order[start : start + batch_size]
        batch = tokens[rows]
        out[rows] = model.encode_text(truncate_tokens(batch) if truncate else batch)
    return out


def pool_synonyms(prompt_embeddings: torch.Tensor, synonym_counts: Sequence[int], num_templates: int) -> torch.Tensor:
    """[M,D] prompt embeddings (class-major, template-major within a class) -> [T,P,D].

    A class with n > 1 synonyms averages its n embeddings per template and renormalises.
    """
    classes, row = [], 0
    for count in synonym_counts:
        block = prompt_embeddings[row : row + num_templates * count].reshape(num_templates, count, -1)
        row += num_templates * count
        classes.append(F.normalize(block.mean(dim=1), dim=-1) if count > 1 else block[:, 0])
    return torch.stack(classes)


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
    names = check_names(names)
    templates = IMAGENET_TEMPLATES[: model.config.num_templates]
    key = embedding_key(text_weights_digest(model), names, templates) if cache is not None else None
    if cache is not None and (hit := cache.get(key)) is not None and hit.shape[:2] == (len(names), len(templates)):
        return torch.from_numpy(hit)
    tokens = tokenize(expand_prompts(names, templates))
    embeddings = encode_prompts(model, tokens, batch_size, truncate, show_progress)
    result = pool_synonyms(embeddings, [len(synonyms(name)) for name in names], len(templates))
    if cache is not None:
        cache.put(key, result.numpy().astype(np.float32), names)
    return result

