"""Text embeddings of a vocabulary, for any text encoder (torch-free).

The steps of the original (spec section 4), written once for the PyTorch model and for the text
stage graph: expand the names into prompts (80 templates, synonyms split on ", "), tokenize,
encode the prompts in batches sorted by length and truncated to their longest prompt (exact: the
CLIP text tower is causal), average the synonyms per template and renormalise. The caller brings
the tokenizer and the encoder; the cache key is the text weights' digest plus names and templates.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.progress import progress

from .embedding_cache import EmbeddingCache, embedding_key
from .prompts import IMAGENET_TEMPLATES, check_names, expand_prompts, synonyms

Tokenize = Callable[[Sequence[str]], np.ndarray]  # texts -> [M,77] int64
CountTokens = Callable[[str], int]  # text -> number of BPE tokens, without the start and end tokens
EncodeBatch = Callable[[np.ndarray], np.ndarray]  # [m,L] int64 -> [m,D] float32, unit rows


def truncate_rows(tokens: np.ndarray) -> np.ndarray:
    """Cut token rows to the longest prompt: the end-of-text token (each row's largest id) included."""
    return tokens[:, : int(tokens.argmax(axis=1).max()) + 1]


def encode_token_rows(
    tokens: np.ndarray, encode: EncodeBatch, batch_size: int = 256, truncate: bool = True, show_progress: bool = True
) -> np.ndarray:
    """[M,77] token rows -> [M,D] embeddings, in batches of similar length, each truncated."""
    order = np.argsort(tokens.argmax(axis=1), kind="stable")
    out: np.ndarray | None = None
    starts = range(0, len(order), batch_size)
    for start in progress(starts, total=len(starts), desc="text encoder", enabled=show_progress):
        rows = order[start : start + batch_size]
        batch = tokens[rows]
        encoded = np.asarray(encode(truncate_rows(batch) if truncate else batch), dtype=np.float32)
        if out is None:
            out = np.empty((len(order), encoded.shape[1]), dtype=np.float32)
        out[rows] = encoded
    return out


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return x / np.maximum(np.sqrt((x * x).sum(axis=axis, keepdims=True)), 1e-12)


def pool_synonyms(prompt_embeddings: np.ndarray, synonym_counts: Sequence[int], num_templates: int) -> np.ndarray:
    """[M,D] prompt embeddings (class-major, template-major within a class) -> [T,P,D].

    A class with n > 1 synonyms averages its n embeddings per template and renormalises.
    """
    classes, row = [], 0
    for count in synonym_counts:
        block = prompt_embeddings[row : row + num_templates * count].reshape(num_templates, count, -1)
        row += num_templates * count
        classes.append(l2_normalize(block.mean(axis=1)) if count > 1 else block[:, 0])
    return np.stack(classes).astype(np.float32)


def embed_names(
    names: Sequence[str],
    tokenize: Tokenize,
    encode: EncodeBatch,
    weights_digest: str,
    num_templates: int = len(IMAGENET_TEMPLATES),
    cache: EmbeddingCache | None = None,
    batch_size: int = 256,
    truncate: bool = True,
    show_progress: bool = True,
) -> np.ndarray:
    """Text embeddings of a vocabulary, [T,P,D] float32, from the cache when present.

    Args:
        names: class names (", " separates synonyms).
        tokenize: texts -> [M,77] int64 CLIP tokens.
        encode: a batch of token rows -> unit embeddings.
        weights_digest: identifies the text weights (part of the cache key).
        num_templates: P, the first P of the 80 templates (80 for SED).
        cache: where to look up and store the result; None computes without caching.
        batch_size: prompts per encoder call.
        truncate: cut each batch to its longest prompt (exact; False runs all 77 positions).
        show_progress: progress bar on stderr.
    """
    names = check_names(names)
    templates = IMAGENET_TEMPLATES[:num_templates]
    key = embedding_key(weights_digest, names, templates)
    if cache is not None and (hit := cache.get(key)) is not None and hit.shape[:2] == (len(names), num_templates):
        return hit
    tokens = np.asarray(tokenize(expand_prompts(names, templates)), dtype=np.int64)
    embeddings = encode_token_rows(tokens, encode, batch_size, truncate, show_progress)
    result = pool_synonyms(embeddings, [len(synonyms(n)) for n in names], num_templates)
    if cache is not None:
        try:
            cache.put(key, result, names)
        except ArtifactError as exc:
            warnings.warn(f"the embeddings were not cached ({exc}); they will be computed again next time",
                          stacklevel=2)
    return result


def context_overflows(names: Sequence[str], count_tokens: CountTokens, templates: Sequence[str] = IMAGENET_TEMPLATES,
                      context_length: int = 77) -> list[tuple[int, int]]:
    """(class index, tokens) of the names one of whose prompts is longer than CLIP's context.

    CLIP cuts such a prompt to `context_length` tokens (end token kept), as the original SED does:
    the class is then encoded from a cut name. Every prompt is the name inside a template, so a
    synonym is measured in the template that adds the most tokens; names too short to overflow
    (at most 4 tokens per character, one per UTF-8 byte) are not tokenized at all.
    """
    overhead = max(count_tokens(t.format("x")) - count_tokens("x") for t in templates)
    room = context_length - 2 - overhead  # start and end tokens
    found = []
    for index, name in enumerate(names):
        worst = 0
        for syn in synonyms(name):
            if len(syn.encode("utf-8")) > room:
                worst = max(worst, count_tokens(syn))
        if worst > room:
            found.append((index, worst + overhead + 2))
    return found
