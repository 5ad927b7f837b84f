"""Vocabularies: lists of class names read from a JSON list or a text file, or found by name.

A name such as `pc459` or `ade150` is looked up as `<name>.json` in the folders of
$SED_DEPLOY_VOCAB_DIR (os.pathsep-separated), `./vocab` and `../shared/data/vocab`; anything that is
an existing file is read directly: a JSON list of strings, or one name per line (blank lines and
lines starting with # skipped). Names are kept verbatim (", " separates synonyms).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .errors import VocabularyError
from .prompts import check_names


def vocab_search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("SED_DEPLOY_VOCAB_DIR", "").split(os.pathsep) if p]
    return dirs + [Path("vocab"), Path("..") / "shared" / "data" / "vocab"]


def resolve_vocabulary(name_or_path: str | Path) -> Path:
    """The file a vocabulary argument refers to."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and path.name == str(name_or_path):
        for folder in vocab_search_dirs():
            candidate = folder / f"{name_or_path}.json"
            if candidate.is_file():
                return candidate
    where = ", ".join(str(d) for d in vocab_search_dirs())
    raise VocabularyError(
        f"vocabulary {str(name_or_path)!r} is neither a file nor a known name (looked for <name>.json in {where}); "
        "pass a JSON list or a file with one class name per line, or set SED_DEPLOY_VOCAB_DIR"
    )


def read_vocabulary(name_or_path: str | Path) -> list[str]:
    """Class names of a vocabulary file or name; raises `VocabularyError` with one line."""
    path = resolve_vocabulary(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read vocabulary {path}: {exc}") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"vocabulary {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    else:
        names = [line.rstrip("\r\n") for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        return check_names(names)
    except VocabularyError as exc:
        raise VocabularyError(f"vocabulary {path}: {exc}") from None


def vocabulary_from_arg(text: str) -> list[str]:
    """A command-line vocabulary: a file, a known name, or an inline comma-separated list.

    Inline lists split on commas that are not followed by a space, so "tree, forest" stays one
    class with two synonyms: "person,tree, forest,sky" is three classes.
    """
    path = Path(text)
    if path.is_file() or ("," not in text and "\n" not in text):
        return read_vocabulary(text)
    return check_names([name.strip() for name in re.split(r",(?! )", text)])


def duplicates(names: list[str]) -> list[str]:
    """Names that appear more than once (each listed once, in order)."""
    seen, dups = set(), []
    for name in names:
        if name in seen and name not in dups:
            dups.append(name)
        seen.add(name)
    return dups
