"""Normalisation of class names typed or pasted by people (torch-free).

Class names come from people and from files that went through many hands: text decoded with the
wrong code page ("MÃ¼nchen" for "München"), decomposed accents, invisible characters pasted from web
pages, tabs and double spaces, emoji. `normalize_names` repairs what can be repaired without
guessing, in this order, and reports every name it changed with what it did:

1. ``mojibake``: UTF-8 text that was decoded as Latin-1 / Windows-1252 is decoded again (ftfy's
   `fix_encoding`; only for names with non-ASCII characters, where mojibake can exist at all);
2. ``control``: control and format characters (zero-width spaces, soft hyphens, byte-order marks,
   bidi marks) and the replacement character U+FFFD are removed;
3. ``emoji``: emoji and pictographic symbols, their modifiers, variation selectors and the
   zero-width joiner that binds emoji sequences are removed;
4. ``nfc``: Unicode normalisation form C (composed accents, as typed on most keyboards);
5. ``whitespace``: any run of whitespace becomes one space, and each synonym (", " separates them) is
   stripped; a synonym left empty is dropped.

Spelling mistakes and merged words are left alone: fixing them needs a guess.

`find_duplicates` then finds names that are the same class to CLIP: equal once case is ignored and
HTML entities are decoded (CLIP's tokenizer lower-cases and unescapes, so they get the same tokens)
and with their synonyms in any order (synonym embeddings are averaged). Such a class could never win
a pixel, so the pipeline refuses the vocabulary.
"""

from __future__ import annotations

import html
import unicodedata
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from sed_deploy.core.errors import VocabularyError
from sed_deploy.core.optional import available, require

from .prompts import SYNONYM_SEPARATOR, check_names, synonyms

FIXES = ("mojibake", "control", "emoji", "nfc", "whitespace")

# Emoji and pictographs, as inclusive code point ranges: the blocks emoji come from, with their
# dingbats and decorative arrows. Letters, digits, punctuation, currency, the ordinary arrows
# (U+2190-21FF) and mathematical symbols are not in here: "C++", "5° slope" or "A -> B" keep them.
EMOJI_RANGES: tuple[tuple[int, int], ...] = (
    (0x1F000, 0x1FAFF),  # mahjong, cards, enclosed alphanumerics (regional indicators), pictographs, emoticons
    (0x2600, 0x27BF),  # miscellaneous symbols, dingbats
    (0x2B00, 0x2BFF),  # miscellaneous symbols and arrows (stars, squares, circles)
    (0x231A, 0x231B),  # watch, hourglass
    (0x23E9, 0x23FA),  # media buttons, alarm clock, stopwatch
    (0xFE00, 0xFE0F),  # variation selectors (text / emoji presentation)
    (0x20E3, 0x20E3),  # combining enclosing keycap
    (0x200D, 0x200D),  # zero-width joiner (joins emoji into one: family, profession, skin tone)
    (0xE0020, 0xE007F),  # tag characters (subdivision flags)
)
REPLACEMENT_CHARACTER = "\ufffd"


@dataclass(frozen=True)
class NameChange:
    """One class name that normalisation changed.

    Attributes:
        index: position of the name in the vocabulary.
        before: the name as given.
        after: the name used.
        fixes: what was done, in order: a subset of `FIXES`.
    """

    index: int
    before: str
    after: str
    fixes: tuple[str, ...]

    def __str__(self) -> str:
        return f"#{self.index} {self.before!r} -> {self.after!r} ({', '.join(self.fixes)})"

    @property
    def token_neutral(self) -> bool:
        """Only whitespace changed, and not the synonyms: CLIP's tokenizer, which splits text on
        whitespace and collapses it, gives both names the same tokens."""
        return self.fixes == ("whitespace",) and len(synonyms(self.before)) == len(synonyms(self.after))


def is_emoji(char: str) -> bool:
    """True for an emoji, a pictograph or an emoji modifier / selector character."""
    point = ord(char)
    return any(low <= point <= high for low, high in EMOJI_RANGES)


def _is_control(char: str) -> bool:
    return char == REPLACEMENT_CHARACTER or unicodedata.category(char) in ("Cc", "Cf")


def _repair_mojibake(name: str) -> str:
    if name.isascii():
        return name
    if not available("ftfy"):
        warnings.warn("ftfy is not installed: mojibake in class names is not repaired "
                      "(pip install 'sed-deploy[text]')", stacklevel=3)
        return name
    return require("ftfy", "repairing mojibake in class names").fix_encoding(name)


def _collapse_whitespace(text: str) -> str:
    """Whitespace runs -> one space, each synonym stripped, empty synonyms dropped."""
    spaced = "".join(" " if char.isspace() else char for char in text)
    parts = (" ".join(part.split()) for part in spaced.split(SYNONYM_SEPARATOR))
    return SYNONYM_SEPARATOR.join(part for part in parts if part)


def normalize_name(name: str) -> tuple[str, tuple[str, ...]]:
    """One class name, normalised; returns (name, fixes applied, a subset of `FIXES` in order)."""
    fixes = []
    text = _repair_mojibake(name)
    if text != name:
        fixes.append("mojibake")
    kept, dropped = [], set()
    for char in text:
        if char.isspace():
            kept.append(char)
        elif is_emoji(char):
            dropped.add("emoji")
        elif _is_control(char):
            dropped.add("control")
        else:
            kept.append(char)
    fixes += [fix for fix in ("control", "emoji") if fix in dropped]
    # composed after the removals: an invisible character between a letter and its accent would
    # otherwise keep them apart
    stripped = "".join(kept)
    composed = unicodedata.normalize("NFC", stripped)
    if composed != stripped:
        fixes.append("nfc")
    # whitespace is reported when the name had irregular spacing of its own, not merely the space
    # left beside a removed emoji
    if _collapse_whitespace(text) != text:
        fixes.append("whitespace")
    result = _collapse_whitespace(composed)
    return result, tuple(fixes)


def normalize_names(names: Sequence[str]) -> tuple[list[str], list[NameChange]]:
    """Normalise a vocabulary; returns (names, the changes, one per changed name).

    Raises:
        VocabularyError: a name is not text, or nothing is left of it (only emoji or invisible
            characters).
    """
    names = check_names(names)
    out, changes = [], []
    for index, name in enumerate(names):
        fixed, fixes = normalize_name(name)
        if not fixed:
            raise VocabularyError(f"class name #{index} {name!r} is empty after normalisation ({', '.join(fixes)}); "
                                  "give it a name in words, or turn normalisation off")
        out.append(fixed)
        if fixed != name:
            changes.append(NameChange(index, name, fixed, fixes))
    return out, changes


def class_key(name: str) -> tuple[str, ...]:
    """What makes two normalised names the same class to CLIP: lower-cased, unescaped, synonyms as a set."""
    text = html.unescape(html.unescape(name)).lower()
    return tuple(sorted({" ".join(part.split()) for part in synonyms(text)}))


def find_duplicates(names: Sequence[str]) -> list[tuple[int, int]]:
    """(first index, later index) of every name that repeats an earlier one as `class_key` sees them."""
    first: dict[tuple[str, ...], int] = {}
    pairs = []
    for index, name in enumerate(names):
        key = class_key(name)
        if key in first:
            pairs.append((first[key], index))
        else:
            first[key] = index
    return pairs


def check_unique(names: Sequence[str], given: Sequence[str] | None = None) -> None:
    """Raise `VocabularyError` naming the first duplicate pair (with the names as given)."""
    pairs = find_duplicates(names)
    if not pairs:
        return
    shown = given if given is not None else names
    i, j = pairs[0]
    raise VocabularyError(f"class names #{i} {shown[i]!r} and #{j} {shown[j]!r} are the same class to CLIP (case, "
                          f"spacing and synonym order ignored); {len(pairs)} duplicate(s): remove them")
