"""Hostile vocabularies: encodings, sizes, special files, inline text, duplicates after normalisation, long names."""

from __future__ import annotations

import codecs
import json
import os
import warnings

import pytest

from sed_deploy.core.errors import VocabularyError
from sed_deploy.runtime.name_repair import check_unique, find_duplicates, normalize_names
from sed_deploy.runtime.prompts import MAX_CLASSES, MAX_NAME_CHARS
from sed_deploy.runtime.segment_cli import main as segment
from sed_deploy.runtime.vocabulary import read_vocabulary, vocabulary_from_arg

from .conftest import cli, digest, one_error_line

NAMES = ["sky", "tree, forest", "München"]
AS_JSON = json.dumps(NAMES, ensure_ascii=False)
AS_LINES = "\n".join(NAMES) + "\n"

# file content -> the names it must give
READABLE = {
    "utf8_bom.json": codecs.BOM_UTF8 + AS_JSON.encode(),
    "utf8_bom.txt": codecs.BOM_UTF8 + AS_LINES.encode(),
    "utf16le_bom.json": codecs.BOM_UTF16_LE + AS_JSON.encode("utf-16-le"),
    "utf16be_bom.txt": codecs.BOM_UTF16_BE + AS_LINES.encode("utf-16-be"),
    "utf32_bom.json": AS_JSON.encode("utf-32"),
    "crlf.txt": AS_LINES.replace("\n", "\r\n").encode(),
    "comments.txt": ("# my classes\n\n" + AS_LINES).encode(),
}
# file content -> substring of the one-line error
UNREADABLE = {
    "latin1.txt": ("sky\nM\xfcnchen\n".encode("latin-1"), "is not UTF-8 text: byte 0xfc at offset 5"),
    "utf16_no_bom.json": (AS_JSON.encode("utf-16-le"), "looks like UTF-16 without a byte-order mark"),
    "binary.txt": (b"sky\n\0\0\0\x01", "NUL characters"),
    "png_as_vocab.json": (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "is not UTF-8 text"),
    "empty.txt": (b"", "the vocabulary is empty"),
    "only_comments.txt": (b"# nothing\n\n", "the vocabulary is empty"),
    "object.json": (b'{"classes": ["sky"]}', "expected a JSON list of class names, got a JSON dict"),
    "numbers.json": (b"[1, 2]", "class name #0 is 1"),
    "nested.json": (b'[["sky"]]', "class name #0 is ['sky']"),
    "deep.json": (b"[" * 100_000, "not valid JSON"),
    "broken.json": (b'["sky", ', "not valid JSON"),
    "blank_name.json": (b'["sky", "  "]', "class name #1 is '  '"),
    "too_many.json": (json.dumps([f"class {i}" for i in range(MAX_CLASSES + 1)]).encode(),
                      f"more than the {MAX_CLASSES}"),
    "long_name.json": (json.dumps(["x" * (MAX_NAME_CHARS + 1)]).encode(), f"more than {MAX_NAME_CHARS}"),
}


@pytest.fixture(scope="module")
def vocab_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vocab")
    for name, data in READABLE.items():
        (folder / name).write_bytes(data)
    for name, (data, _) in UNREADABLE.items():
        (folder / name).write_bytes(data)
    os.mkfifo(folder / "fifo.txt")
    (folder / "folder.json").mkdir()
    return folder


@pytest.mark.parametrize("name", sorted(READABLE))
def test_encodings_with_a_byte_order_mark_are_read(vocab_files, name):
    assert [n.strip() for n in read_vocabulary(vocab_files / name)] == NAMES
    assert [n.strip() for n in vocabulary_from_arg(str(vocab_files / name))] == NAMES


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_vocabulary_is_one_line(vocab_files, name):
    with pytest.raises(VocabularyError, match=UNREADABLE[name][1].replace("[", r"\[").replace("]", r"\]")) as info:
        vocabulary_from_arg(str(vocab_files / name))
    assert "\n" not in str(info.value)


def test_special_files_as_vocabulary_never_block(vocab_files):
    for path in (vocab_files / "fifo.txt", vocab_files / "folder.json", "/dev/zero"):
        with pytest.raises(VocabularyError, match="not a regular file"):
            vocabulary_from_arg(str(path))


def test_inline_vocabularies(tmp_path):
    assert vocabulary_from_arg("sky") == ["sky"]  # one class, inline
    assert vocabulary_from_arg("ADE150") == vocabulary_from_arg("ade150")  # a known name, case ignored
    assert len(vocabulary_from_arg("ade847")) == 847 and len(vocabulary_from_arg("coco-stuff")) == 171
    long_inline = ",".join(f"class number {i}" for i in range(40))  # 600+ bytes: more than a file name can be
    assert len(long_inline.encode()) > 255 and len(vocabulary_from_arg(long_inline)) == 40
    assert vocabulary_from_arg("b" * 600) == ["b" * 600]  # no "File name too long" from looking for a file
    with pytest.raises(VocabularyError, match=f"more than {MAX_NAME_CHARS}"):
        vocabulary_from_arg("a" * 5000)
    with pytest.raises(VocabularyError, match="empty"):
        vocabulary_from_arg("  ")
    with pytest.raises(VocabularyError, match="class name #1 is ''"):
        vocabulary_from_arg("sky,,road")
    with pytest.raises(VocabularyError, match="does not exist"):
        vocabulary_from_arg(str(tmp_path / "classes.txt"))
    assert vocabulary_from_arg("sky\0road") == ["sky\0road"]  # a NUL cannot name a file; repair removes it later


def test_duplicates_are_found_after_normalisation():
    given = ["Sky", " sky ", "SKY", "tree, forest", "forest,  tree", "ro\u200bad", "road", "Cafe\u0301", "café"]
    names, _ = normalize_names(given)
    assert find_duplicates(names) == [(0, 1), (0, 2), (3, 4), (5, 6), (7, 8)]
    with pytest.raises(VocabularyError, match=r"class names #0 'Sky' and #1 ' sky ' are the same class"):
        check_unique(names, given)
    check_unique(normalize_names(["sky", "skyscraper", "sky, cloud"])[0])  # different classes


def test_duplicates_and_long_names_in_the_pipeline(tiny_artifacts):
    from sed_deploy.runtime.pipeline import Pipeline

    artifacts, _ = tiny_artifacts
    with Pipeline.from_artifacts(artifacts, backend="ort") as pipeline:
        with pytest.raises(VocabularyError, match="the same class to CLIP"):
            pipeline.set_vocabulary(["Sky", " sky ", "SKY"], show_progress=False)
        long_name = " ".join(["very"] * 90) + " long name"  # 92 words: cut to 77 tokens by CLIP
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline.set_vocabulary(["sky", long_name], show_progress=False)
        messages = [str(w.message) for w in caught]
        assert any("#1 'very very" in m and "77-token context" in m for m in messages), messages
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipeline.set_vocabulary(["sky", "a " * 20 + "car"], show_progress=False)  # fits: no warning
        assert not [w for w in caught if "context" in str(w.message)]


def test_cli_vocabulary_cases(tiny_artifacts, vocab_files, tmp_path, capsys):
    from PIL import Image

    artifacts, _ = tiny_artifacts
    image = tmp_path / "street.png"
    Image.new("RGB", (20, 16), (30, 90, 200)).save(image)
    before = digest(vocab_files)
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", "sky", image, "-o", tmp_path / "one"], capsys)
    assert outcome.code == 0, outcome.err
    assert json.loads((tmp_path / "one" / "street.json").read_text())["vocabulary_size"] == 1
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", "Sky,sky ,SKY", image, "-o", tmp_path / "d"], capsys)
    one_error_line(outcome, "are the same class to CLIP")
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", str(vocab_files / "utf16_no_bom.json"), image,
                            "-o", tmp_path / "e"], capsys)
    one_error_line(outcome, "UTF-16 without a byte-order mark")
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", "x" * 300 + "," + "y" * 300, image,
                            "-o", tmp_path / "f"], capsys)  # inline text longer than a file name may be
    assert outcome.code == 0 and "File name too long" not in outcome.err
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", "ade15", image, "-o", tmp_path / "g"], capsys)
    assert outcome.code == 0 and "did you mean the vocabulary ade150" in outcome.err
    assert digest(vocab_files) == before
