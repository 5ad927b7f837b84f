"""Text side: truncation is exact, synonyms are averaged per template, embeddings are cached."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sed_deploy.core.errors import VocabularyError
from sed_deploy.export.text import embed_vocabulary, encode_prompts
from sed_deploy.model.text import tokenize
from sed_deploy.runtime import text_encoding
from sed_deploy.runtime.embedding_cache import EmbeddingCache
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES, expand_prompts


def test_truncated_encoding_equals_77_token_encoding(tiny_model):
    names = ["person", "a very long class name with many many words in it", "sky", "traffic light"]
    tokens = tokenize(expand_prompts(names))
    assert tokens.shape[1] == 77
    truncated = encode_prompts(tiny_model, tokens, batch_size=64, truncate=True, show_progress=False)
    full = encode_prompts(tiny_model, tokens, batch_size=64, truncate=False, show_progress=False)
    assert np.abs(truncated - full).max() < 1e-5
    np.testing.assert_allclose(np.linalg.norm(truncated, axis=-1), 1.0, rtol=1e-6)


def test_prompts_are_template_major_per_class():
    prompts = expand_prompts(["cat", "tree, wood"], IMAGENET_TEMPLATES[:2])
    assert prompts == ["a bad photo of a cat.", "a photo of many cat.",
                       "a bad photo of a tree.", "a bad photo of a wood.",
                       "a photo of many tree.", "a photo of many wood."]


def test_synonyms_are_averaged_per_template_and_renormalised(tiny_model):
    both = embed_vocabulary(tiny_model, ["tree, wood"], show_progress=False)[0]
    tree = embed_vocabulary(tiny_model, ["tree"], show_progress=False)[0]
    wood = embed_vocabulary(tiny_model, ["wood"], show_progress=False)[0]
    torch.testing.assert_close(both, F.normalize(tree + wood, dim=-1), rtol=1e-5, atol=1e-6)
    assert both.shape == (80, tiny_model.config.embed_dim)


def test_names_are_used_verbatim_and_order_is_kept(tiny_model):
    emb = embed_vocabulary(tiny_model, ["dog", "cat", "dog"], show_progress=False)
    torch.testing.assert_close(emb[0], emb[2], rtol=0, atol=0)
    assert not torch.allclose(emb[0], emb[1])


def test_cache_miss_then_hit(tiny_model, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)
    first = embed_vocabulary(tiny_model, ["road", "car"], cache=cache, show_progress=False)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    calls = []
    monkeypatch.setattr(text_encoding, "encode_token_rows", lambda *a, **k: calls.append(1))
    second = embed_vocabulary(tiny_model, ["road", "car"], cache=cache, show_progress=False)
    assert calls == [] and torch.equal(first, second)
    with pytest.raises(TypeError):  # a different vocabulary misses the cache and computes
        embed_vocabulary(tiny_model, ["road", "bus"], cache=cache, show_progress=False)


def test_interrupted_cache_write_leaves_nothing(tiny_model, tmp_path, monkeypatch):
    cache = EmbeddingCache(tmp_path)

    def broken_save(f, *args, **kwargs):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(KeyboardInterrupt):
        embed_vocabulary(tiny_model, ["road"], cache=cache, show_progress=False)
    assert list(tmp_path.glob("*.npy")) == [] and list(tmp_path.glob("*.partial")) == []


@pytest.mark.parametrize("names,match", [([], "empty"), (["ok", "  "], "#1"), ("sky", "list of class names")])
def test_bad_vocabularies(tiny_model, names, match):
    with pytest.raises(VocabularyError, match=match):
        embed_vocabulary(tiny_model, names, show_progress=False)
