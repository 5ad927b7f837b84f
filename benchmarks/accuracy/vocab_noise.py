"""Reproducible noise on class names, as people type and paste them; and how far it moves the embeddings.

Four kinds, each at two levels (light: half of the names, heavy: every name, more edits):

- ``typos``: swapped, dropped, doubled letters and neighbouring keys on a QWERTY keyboard;
- ``spacing``: doubled spaces, tabs, leading and trailing spaces; heavy adds no-break and
  ideographic spaces and merges the words of some multi-word names ("traffic light" ->
  "trafficlight");
- ``unicode``: invisible characters pasted from web pages (zero-width space and non-joiner, soft
  hyphen, byte-order mark), accents decomposed (NFD); heavy then garbles the name into mojibake (its
  UTF-8 bytes read as Windows-1252, as a wrongly decoded file shows them);
- ``emoji``: emoji beside the words; heavy adds several, including joined sequences, skin tones and
  flags, sometimes without a space.

The runtime's normalisation (`sed_deploy.runtime.name_repair`) can undo spacing (except merged words),
unicode and emoji noise; typos need a guess and stay. Synonyms (", ") are perturbed one by one and
the separator is kept. The same (names, kind, level, seed) always gives the same noisy names.
"""

from __future__ import annotations

import random
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.prompts import SYNONYM_SEPARATOR, check_names

from .run import CLEAN, Variant, vocabulary_predictor

KINDS = ("typos", "spacing", "unicode", "emoji")
LEVELS = ("light", "heavy")
SHARE_OF_NAMES = {"light": 0.5, "heavy": 1.0}

KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
INVISIBLE = ("\u200b", "\u200c", "\u00ad", "\ufeff")  # zero-width space, zero-width non-joiner, soft hyphen, BOM
ODD_SPACES = ("\u00a0", "\u3000", "\u2009")  # no-break, ideographic, thin
SINGLE_EMOJI = ("\U0001F697", "\U0001F333", "\U0001F642", "\u2b50", "\U0001F525", "\u2705", "\U0001F3E0",
                "\U0001F6A6", "\u2764\ufe0f", "\U0001F4F7")
JOINED_EMOJI = (
    "\U0001F469\u200d\U0001F469\u200d\U0001F467",  # family
    "\U0001F3C3\U0001F3FD\u200d\u2640\ufe0f",  # woman running, medium skin tone
    "\U0001F44D\U0001F3FD",  # thumbs up, medium skin tone
    "\U0001F1EC\U0001F1E7",  # flag (regional indicators)
    "\U0001F3F3\ufe0f\u200d\U0001F308",  # rainbow flag
)


def _neighbours(letter: str) -> str:
    """Keys next to a letter on a QWERTY keyboard (same row, and the rows above and below)."""
    for r, row in enumerate(KEYBOARD_ROWS):
        c = row.find(letter.lower())
        if c < 0:
            continue
        near = [row[i] for i in (c - 1, c + 1) if 0 <= i < len(row)]
        for other, shifts in ((r - 1, (0, 1)), (r + 1, (-1, 0))):
            if 0 <= other < len(KEYBOARD_ROWS):
                near += [KEYBOARD_ROWS[other][c + s] for s in shifts if 0 <= c + s < len(KEYBOARD_ROWS[other])]
        return "".join(near)
    return ""


def _typo(text: str, rng: random.Random) -> str:
    letters = [i for i, ch in enumerate(text) if ch.isalpha()]
    if len(letters) < 3:
        return text
    i = rng.choice(letters)
    operation = rng.choice(("swap", "drop", "double", "key"))
    if operation == "swap" and i + 1 < len(text) and text[i + 1].isalpha() and text[i + 1] != text[i]:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if operation == "drop" and len(letters) >= 4:
        return text[:i] + text[i + 1:]
    if operation == "key" and (near := _neighbours(text[i])):
        key = rng.choice(near)
        return text[:i] + (key.upper() if text[i].isupper() else key) + text[i + 1:]
    return text[:i] + text[i] + text[i:]  # double


def typos(text: str, rng: random.Random, heavy: bool) -> str:
    """One (light) or two (heavy) typing mistakes."""
    for _ in range(2 if heavy else 1):
        text = _typo(text, rng)
    return text


def spacing(text: str, rng: random.Random, heavy: bool) -> str:
    """Irregular whitespace; heavy also merges the words of multi-word names half of the time."""
    words = text.split(" ")
    if heavy and len(words) > 1 and rng.random() < 0.5:
        i = rng.randrange(len(words) - 1)
        words[i:i + 2] = [words[i] + words[i + 1]]
    gaps = [rng.choice(("  ", "\t", " \t ", "   ") + (ODD_SPACES if heavy else ())) if rng.random() < 0.7 else " "
            for _ in words[1:]]
    out = words[0] + "".join(g + w for g, w in zip(gaps, words[1:], strict=True))
    ends = rng.choice((("  ", ""), ("", " "), (" ", "  "), ("\t", ""))) if heavy or rng.random() < 0.7 else ("", "")
    out = ends[0] + out + ends[1]
    return out if out != text else out + " "


def _mojibake(text: str) -> str:
    """UTF-8 bytes read as Windows-1252 (bytes it leaves undefined read as Latin-1)."""
    chars = []
    for byte in text.encode("utf-8"):
        try:
            chars.append(bytes([byte]).decode("cp1252"))
        except UnicodeDecodeError:
            chars.append(chr(byte))
    return "".join(chars)


def unicode_noise(text: str, rng: random.Random, heavy: bool) -> str:
    """Invisible characters and decomposed accents; heavy garbles the result into mojibake."""
    text = unicodedata.normalize("NFD", text)
    for _ in range(rng.randint(1, 2) if heavy else 1):
        i = rng.randrange(1, len(text)) if len(text) > 1 else 1
        text = text[:i] + rng.choice(INVISIBLE) + text[i:]
    return _mojibake(unicodedata.normalize("NFC", text)) if heavy else text


def emoji_noise(text: str, rng: random.Random, heavy: bool) -> str:
    """Emoji beside the words: one (light), or two or three, joined ones included (heavy)."""
    for _ in range(rng.randint(2, 3) if heavy else 1):
        emoji = rng.choice(SINGLE_EMOJI + (JOINED_EMOJI if heavy else ()))
        space = "" if heavy and rng.random() < 0.3 else " "
        text = f"{emoji}{space}{text}" if rng.random() < 0.5 else f"{text}{space}{emoji}"
    return text


NOISE: dict[str, Callable[[str, random.Random, bool], str]] = {
    "typos": typos, "spacing": spacing, "unicode": unicode_noise, "emoji": emoji_noise,
}


def perturb_names(names: Sequence[str], kind: str, level: str = "light", seed: int = 0) -> list[str]:
    """Noisy copies of class names, the same for the same arguments.

    Args:
        names: the clean vocabulary.
        kind: one of `KINDS`.
        level: "light" (half of the names, one edit) or "heavy" (every name, more edits).
        seed: chooses the names and the edits.
    """
    if kind not in NOISE:
        raise ConfigError(f"noise kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if level not in SHARE_OF_NAMES:
        raise ConfigError(f"noise level must be one of {', '.join(LEVELS)}, got {level!r}")
    names = check_names(names)
    rng = random.Random(f"{kind}/{level}/{seed}")
    count = max(1, round(SHARE_OF_NAMES[level] * len(names)))
    chosen = set(rng.sample(range(len(names)), count))
    perturb, heavy = NOISE[kind], level == "heavy"
    return [SYNONYM_SEPARATOR.join(perturb(s, rng, heavy) for s in name.split(SYNONYM_SEPARATOR)) if i in chosen
            else name for i, name in enumerate(names)]


def embedding_similarity(clean: np.ndarray, noisy: np.ndarray) -> np.ndarray:
    """Cosine similarity per class of two [T,P,D] embedding arrays, averaged over the P templates: [T]."""
    clean = np.asarray(clean, dtype=np.float64)
    noisy = np.asarray(noisy, dtype=np.float64)
    if clean.shape != noisy.shape:
        raise ConfigError(f"expected embeddings of the same shape, got {list(clean.shape)} and {list(noisy.shape)}")
    dot = (clean * noisy).sum(axis=-1)
    norms = np.linalg.norm(clean, axis=-1) * np.linalg.norm(noisy, axis=-1)
    return (dot / np.maximum(norms, 1e-12)).mean(axis=-1)


def noise_variants(pipeline: Pipeline, kinds: Sequence[str], level: str = "light", seed: int = 0,
                   show_progress: bool = True) -> list[Variant]:
    """The noise study's vocabularies: for each kind, the noisy names as they are and normalised.

    The pipeline's current vocabulary is the clean one; each noisy vocabulary is encoded through its
    text stage (or found in the cache), compared with the clean embeddings, and the clean vocabulary
    is set again at the end. Variants whose embeddings equal the clean ones (or an earlier
    variant's) share their predictions instead of running again.

    Args:
        pipeline: a `Pipeline` with the clean vocabulary set.
        kinds: noise kinds (`KINDS`).
        level: "light" or "heavy".
        seed: the noise seed.
        show_progress: progress bars while encoding.

    Returns:
        two variants per kind (normalisation off, then on).
    """
    clean_names, clean_text = list(pipeline.names), pipeline.text
    encoded: list[np.ndarray] = []
    variants = []
    try:
        for kind in kinds:
            noisy = perturb_names(clean_names, kind, level, seed)
            for normalize in (False, True):
                pipeline.set_vocabulary(noisy, show_progress=show_progress, normalize=normalize)
                names, text = list(pipeline.names), pipeline.text
                similarity = embedding_similarity(clean_text, text)
                same_as = CLEAN if np.array_equal(text, clean_text) else next(
                    (i for i, e in enumerate(encoded) if np.array_equal(e, text)), None)
                encoded.append(text)
                variants.append(Variant(
                    label=f"{kind} {level}, {'normalised' if normalize else 'as typed'}",
                    names=names,
                    predict=vocabulary_predictor(pipeline, names, text) if same_as is None else None,
                    same_as=same_as,
                    info={
                        "kind": kind, "level": level, "seed": seed, "normalised": normalize,
                        "names_changed_by_noise": sum(a != b for a, b in zip(noisy, clean_names, strict=True)),
                        "names_changed_by_normalisation": len(pipeline.name_changes),
                        "names_equal_to_clean": sum(a == b for a, b in zip(names, clean_names, strict=True)),
                        "cosine_mean": round(float(similarity.mean()), 6),
                        "cosine_min": round(float(similarity.min()), 6),
                        "examples": [[a, b] for a, b in zip(clean_names, names, strict=True) if a != b][:5],
                    },
                ))
    finally:
        pipeline.set_vocabulary(clean_names, embeddings=clean_text, show_progress=False, normalize=False)
    return variants
