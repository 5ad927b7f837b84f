"""Vocabularies: lists of class names from a file, a known name, or the command line.

A command-line vocabulary is resolved in this order:

1. an existing path: the file is read (a JSON list of strings, or one name per line with blank lines
   and lines starting with # skipped);
2. a known name (`ade150`, `ade847`, `pc59`, `pc459`, `voc20`, `voc20b`, `coco`; case ignored):
   the list shipped with the package (`runtime/vocab/`), else `<name>.json` in the folders of
   $SED_DEPLOY_VOCAB_DIR (os.pathsep-separated) or `./vocab`;
3. otherwise the text itself: class names separated by commas; a comma followed by a space
   separates synonyms of one class ("tree, forest"), so `sky` is a vocabulary of one class and
   "person,tree, forest,sky" one of three.

Files are decoded as UTF-8 (a byte-order mark is dropped) or as UTF-16/32 when they start with that
encoding's byte-order mark; anything else that is not valid UTF-8 is refused with the offset of
the first bad byte. Names are kept verbatim here; the pipeline repairs them (`name_repair`).
"""

from __future__ import annotations

import codecs
import difflib
import json
import os
import re
import stat
from pathlib import Path

from sed_deploy.core.errors import VocabularyError

from .prompts import check_names

PACKAGED_DIR = Path(__file__).resolve().parent / "vocab"
KNOWN = ("ade150", "ade847", "pc59", "pc459", "voc20", "voc20b", "coco")
ALIASES = {"coco-stuff": "coco", "cocostuff": "coco", "coco171": "coco"}
MAX_FILE_BYTES = 16 << 20
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def vocab_search_dirs() -> list[Path]:
    """Where known names are looked up, in order: the packaged lists, $SED_DEPLOY_VOCAB_DIR, ./vocab."""
    extra = [Path(p) for p in os.environ.get("SED_DEPLOY_VOCAB_DIR", "").split(os.pathsep) if p]
    return [PACKAGED_DIR, *extra, Path("vocab")]


def _exists(text: str) -> bool:
    """Whether `text` names something on disk; False for text that cannot be a path (too long, NUL)."""
    try:
        return os.path.lexists(text)
    except (OSError, ValueError):
        return False


def known_vocabulary(name: str) -> Path | None:
    """The file of a known vocabulary name, or None."""
    if not name or "/" in name or os.sep in name or "," in name or "\n" in name or len(name) > 100:
        return None
    key = ALIASES.get(name.lower(), name.lower())
    for folder in vocab_search_dirs():
        for candidate in (folder / f"{key}.json", folder / f"{name}.json"):
            try:
                if candidate.is_file():
                    return candidate
            except OSError:
                continue
    return None


def resolve_vocabulary(name_or_path: str | Path) -> Path:
    """The file a vocabulary argument that is a path or a known name refers to."""
    text = str(name_or_path)
    if _exists(text):
        return Path(text)
    found = known_vocabulary(text)
    if found is not None:
        return found
    raise VocabularyError(f"vocabulary {text!r} is neither a file nor a known name ({', '.join(KNOWN)}); "
                          "pass a JSON list or a file with one class name per line")


def decode_text(data: bytes, where: str) -> str:
    """Text of a vocabulary file: UTF-8 (BOM dropped), or UTF-16/32 with their BOM."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise VocabularyError(f"{where} starts with a {encoding} byte-order mark but is not valid "
                                      f"{encoding} (byte {exc.start}); save it as UTF-8") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        hint = " (it looks like UTF-16 without a byte-order mark)" if data.count(b"\0") > len(data) // 4 else ""
        raise VocabularyError(f"{where} is not UTF-8 text: byte 0x{data[exc.start]:02x} at offset {exc.start}"
                              f"{hint}; save it as UTF-8") from None
    if "\0" in text:
        raise VocabularyError(f"{where} contains NUL characters: it is a binary file, not a list of class names")
    return text


def _read_bytes(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise VocabularyError(f"cannot read vocabulary {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise VocabularyError(f"vocabulary {path} is not a regular file; give a JSON list or a text file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > MAX_FILE_BYTES:
            raise VocabularyError(f"vocabulary {path} is {info.st_size / 2**20:.0f} MiB; a vocabulary file is at "
                                  f"most {MAX_FILE_BYTES >> 20} MiB")
        try:
            return f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise VocabularyError(f"cannot read vocabulary {path}: {exc.strerror or exc}") from None


def parse_vocabulary(text: str, where: str) -> list[str]:
    """Class names of a vocabulary file's text: a JSON list, or one name per line."""
    stripped = text.lstrip()
    if stripped.startswith(("[", "{", '"')):
        try:
            names = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError) as exc:
            detail = f"{exc.msg}, line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else "nested too deep"
            raise VocabularyError(f"{where} is not valid JSON ({detail})") from None
        if not isinstance(names, list):
            raise VocabularyError(f"{where}: expected a JSON list of class names, got a JSON {type(names).__name__}")
    else:
        names = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        return check_names(names)
    except VocabularyError as exc:
        raise VocabularyError(f"{where}: {exc}") from None


def read_vocabulary(name_or_path: str | Path) -> list[str]:
    """Class names of a vocabulary file or known name; raises `VocabularyError` with one line."""
    path = resolve_vocabulary(name_or_path)
    where = f"vocabulary {path}"
    return parse_vocabulary(decode_text(_read_bytes(path), where), where)


def vocabulary_from_arg(text: str) -> list[str]:
    """A command-line vocabulary: a file, a known name, or inline class names (see the module docstring)."""
    if not isinstance(text, str) or not text.strip():
        raise VocabularyError("the vocabulary is empty; give a file, a known name (ade150, ...) or class names")
    if _exists(text) or known_vocabulary(text) is not None:
        return read_vocabulary(text)
    if text.endswith((".json", ".txt")) or (os.sep in text and "," not in text):
        raise VocabularyError(f"vocabulary file {text} does not exist")
    return check_names([name.strip() for name in re.split(r",(?! )", text)])


def near_known_name(text: str) -> str | None:
    """A known vocabulary name `text` is probably a misspelling of (for a warning), or None."""
    if "," in text or " " in text.strip():
        return None
    close = difflib.get_close_matches(text.lower(), KNOWN, n=1, cutoff=0.8)
    return close[0] if close else None
