"""Noisy class names: the noise is reproducible, the runtime repairs what it can and reports every change."""

import unicodedata

import numpy as np
import pytest

from sed_deploy.benchmarks.accuracy.vocab_noise import KINDS, embedding_similarity, perturb_names
from sed_deploy.core.errors import ConfigError, VocabularyError
from sed_deploy.runtime import name_repair as names_module
from sed_deploy.runtime.embedding_cache import embedding_key
from sed_deploy.runtime.name_repair import normalize_name, normalize_names
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES

from ...conftest import ARTIFACTS_VOCAB

CLEAN = ["person", "traffic light", "tree, forest", "sky", "road", "café", "München", "side walk", "bus",
         "crème brûlée"]


@pytest.mark.parametrize("kind, level, fix", [
    ("spacing", "light", "whitespace"), ("unicode", "light", "control"), ("unicode", "heavy", "mojibake"),
    ("emoji", "light", "emoji"), ("emoji", "heavy", "emoji"),
])
def test_repairable_noise_is_undone_and_every_change_is_reported(kind, level, fix):
    noisy = perturb_names(CLEAN, kind, level, seed=3)
    touched = {i for i, (a, b) in enumerate(zip(noisy, CLEAN, strict=True)) if a != b}
    assert len(touched) >= len(CLEAN) // 2
    fixed, changes = normalize_names(noisy)
    assert fixed == CLEAN
    assert {c.index for c in changes} == touched
    for change in changes:
        assert change.before == noisy[change.index] and change.after == CLEAN[change.index]
        assert repr(change.before) in str(change) and repr(change.after) in str(change)
    assert any(fix in c.fixes for c in changes)


def test_unicode_noise_decomposes_accents_and_nfc_composes_them_again():
    noisy = perturb_names(CLEAN, "unicode", "light", seed=0)
    decomposed = [n for n, c in zip(noisy, CLEAN, strict=True) if n != c and not c.isascii()]
    assert decomposed and all(unicodedata.normalize("NFC", n) != n for n in decomposed)
    _, changes = normalize_names(noisy)
    assert all("nfc" in c.fixes for c in changes if not CLEAN[c.index].isascii())


@pytest.mark.parametrize("level", ["light", "heavy"])
def test_typos_are_left_alone(level):
    noisy = perturb_names(CLEAN, "typos", level, seed=1)
    assert sum(a != b for a, b in zip(noisy, CLEAN, strict=True)) >= len(CLEAN) // 2
    assert normalize_names(noisy) == (noisy, [])


def test_merged_words_stay_merged():
    fixed, changes = normalize_names(["  trafficlight\t"])
    assert fixed == ["trafficlight"] and changes[0].fixes == ("whitespace",)


@pytest.mark.parametrize("raw, expected, fixes", [
    ("MÃ¼nchen", "München", ("mojibake",)),
    ("cafe\u0301", "café", ("nfc",)),
    ("traffic\u00e2\u20ac\u2039light", "trafficlight", ("mojibake", "control")),
    ("road\u00c2\u00a0sign", "road sign", ("mojibake", "whitespace")),
    ("bus\u200b\ufeff", "bus", ("control",)),
    ("pedestrian \U0001F469\u200d\U0001F469\u200d\U0001F467 \U0001F1EC\U0001F1E7", "pedestrian", ("emoji",)),
    ("tree \U0001F333, forest", "tree, forest", ("emoji",)),
    ("tree,\u00a0 forest ", "tree, forest", ("whitespace",)),
    ("C++ 5\u00b0 slope \u00a9", "C++ 5\u00b0 slope \u00a9", ()),
])
def test_each_repair(raw, expected, fixes):
    assert normalize_name(raw) == (expected, fixes)


def test_a_name_of_only_emoji_is_an_error():
    with pytest.raises(VocabularyError, match=r"class name #1 .* is empty after normalisation \(emoji\)"):
        normalize_names(["car", "\U0001F697\ufe0f"])


def test_without_ftfy_mojibake_stays_with_a_warning(monkeypatch):
    monkeypatch.setattr(names_module, "available", lambda name: False)
    with pytest.warns(UserWarning, match="ftfy is not installed"):
        assert normalize_name("MÃ¼nchen ") == ("MÃ¼nchen", ("whitespace",))


def test_whitespace_only_changes_are_token_neutral_unless_synonyms_change():
    _, changes = normalize_names(["bed ", "tree,\u00a0forest", "car \U0001F697"])
    assert [c.token_neutral for c in changes] == [True, False, False]


def test_noise_is_reproducible_and_checked():
    for kind in KINDS:
        assert perturb_names(CLEAN, kind, "heavy", seed=7) == perturb_names(CLEAN, kind, "heavy", seed=7)
        assert perturb_names(CLEAN, kind, "heavy", seed=7) != perturb_names(CLEAN, kind, "heavy", seed=8)
    with pytest.raises(ConfigError, match="noise kind must be one of typos, spacing, unicode, emoji, got 'caps'"):
        perturb_names(CLEAN, "caps")
    with pytest.raises(ConfigError, match="noise level must be one of light, heavy, got 'medium'"):
        perturb_names(CLEAN, "typos", "medium")


def test_embedding_similarity_per_class():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 4, 8))
    b = a.copy()
    b[1] = -b[1]
    np.testing.assert_allclose(embedding_similarity(a, 2 * b), [1.0, -1.0, 1.0])


@pytest.fixture(scope="module")
def pipeline(tiny_artifacts, tmp_path_factory):
    out, _ = tiny_artifacts
    with Pipeline.from_artifacts(out, backend="ort", cache_dir=tmp_path_factory.mktemp("cache")) as pipe:
        yield pipe


def test_pipeline_normalises_names_and_reports_the_changes(pipeline):
    noisy = ["person \U0001F642", "dog", "tree,  forest", "sky", "ro\u200bad"]
    embeddings = np.ones((5, 80, 32), dtype=np.float32)
    pipeline.set_vocabulary(noisy, embeddings=embeddings)
    assert pipeline.names == ARTIFACTS_VOCAB
    assert [(c.index, c.fixes) for c in pipeline.name_changes] == [(0, ("emoji",)), (2, ("whitespace",)),
                                                                   (4, ("control",))]
    pipeline.set_vocabulary(noisy, embeddings=embeddings, normalize=False)
    assert pipeline.names == noisy and pipeline.name_changes == []


def test_normalised_names_find_the_shipped_embeddings(pipeline):
    shipped = pipeline._lookup_embeddings(ARTIFACTS_VOCAB)
    assert shipped is not None
    pipeline.set_vocabulary([f"{n} \U0001F333" for n in ARTIFACTS_VOCAB], show_progress=False)
    assert pipeline.names == ARTIFACTS_VOCAB
    np.testing.assert_array_equal(pipeline.text, shipped)


def test_whitespace_only_changes_reuse_embeddings_cached_under_the_names_as_given(pipeline):
    given = ["sky ", "road"]  # as ade150's "bed ": whitespace never changes CLIP tokens
    cached = np.random.default_rng(0).standard_normal((2, 80, 32)).astype(np.float32)
    key = embedding_key(pipeline.manifest.text["weights_digest"], given, IMAGENET_TEMPLATES)
    pipeline.cache.put(key, cached, given)
    pipeline.set_vocabulary(given, show_progress=False)
    assert pipeline.names == ["sky", "road"]
    np.testing.assert_array_equal(pipeline.text, cached)
