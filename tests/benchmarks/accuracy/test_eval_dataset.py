"""Pairing images and label PNGs by stem; 8- and 16-bit labels; every problem one line, none fatal alone."""

import numpy as np
import pytest
from PIL import Image

from sed_deploy.benchmarks.accuracy.dataset import (
    EvaluationError,
    Sample,
    choose_subset,
    load_pair,
    pair_samples,
    read_label,
)

IGNORE = 255


def _rgb(path, height=4, width=6, value=100):
    Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8)).save(path)


def _label(path, array):
    Image.fromarray(np.asarray(array)).save(path)


@pytest.fixture()
def folder(tmp_path):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    _rgb(images / "a.png")
    _label(labels / "a.png", np.arange(24, dtype=np.uint8).reshape(4, 6) % 3)
    _rgb(images / "b.jpg")
    _label(labels / "b.png", np.full((4, 6), 299, dtype=np.uint16))  # 16-bit, ids above 255
    _rgb(images / "c.png")
    _label(labels / "c.png", np.zeros((5, 6), dtype=np.uint8))  # wrong size
    _rgb(images / "d.png")  # no label
    _label(labels / "e.png", np.zeros((4, 6), dtype=np.uint8))  # no image
    _rgb(images / "f.png")
    _rgb(labels / "f.png")  # a colour label
    _rgb(images / "g.png")
    _label(labels / "g.png", np.array([[0, 1, 7, 7, IGNORE, 2]] * 4, dtype=np.uint8))  # 7 is out of range
    _rgb(images / "a.jpg")  # a second image with the stem "a"
    (images / "notes.txt").write_text("not an image")
    (images / ".hidden.png").write_bytes(b"")
    return images, labels


def test_pairs_by_stem_and_problems_one_line_each(folder):
    images, labels = folder
    samples, problems = pair_samples(images, labels)
    assert [s.stem for s in samples] == ["a", "b", "c", "f", "g"]
    assert samples[0].image.name == "a.jpg"  # name order: a.jpg before a.png
    kinds = sorted(p.kind for p in problems)
    assert kinds == ["duplicate", "missing image", "missing label"]
    lines = [str(p) for p in problems]
    assert all("\n" not in line for line in lines)
    assert any(line.startswith(f"missing label: {images / 'd.png'}: no d.png in") for line in lines)
    assert any(line.startswith(f"missing image: {labels / 'e.png'}") for line in lines)


def test_label_suffix(tmp_path):
    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    _rgb(tmp_path / "i" / "0001TP_006690.png")
    _label(tmp_path / "l" / "0001TP_006690_L.png", np.zeros((4, 6), dtype=np.uint8))
    samples, problems = pair_samples(tmp_path / "i", tmp_path / "l", label_suffix="_L")
    assert [s.stem for s in samples] == ["0001TP_006690"] and problems == []


def test_8_and_16_bit_labels(folder):
    _, labels = folder
    eight = read_label(labels / "a.png")
    assert eight.dtype == np.int64 and eight.max() == 2
    sixteen = read_label(labels / "b.png")
    assert sixteen.shape == (4, 6) and np.all(sixteen == 299)
    palette = labels / "p.png"
    image = Image.fromarray(np.array([[0, 4]], dtype=np.uint8), mode="L").convert("P")
    image.putpalette([0, 0, 0, 9, 9, 9] * 128)
    image.save(palette)
    np.testing.assert_array_equal(read_label(palette), [[0, 4]])  # palette indices, not colours


def test_load_pair_skips_or_masks(folder):
    images, labels = folder
    samples = {s.stem: s for s in pair_samples(images, labels)[0]}
    rgb, gt, problems = load_pair(samples["b"], 300, IGNORE)
    assert rgb.shape == (4, 6, 3) and np.all(gt == 299) and problems == []
    _, gt, problems = load_pair(samples["b"], 10, IGNORE)  # 299 outside ten classes
    assert np.all(gt == IGNORE)
    assert str(problems[0]).endswith("24 pixel(s) with indices outside the vocabulary of 10 classes (299); ignored")
    _, gt, problems = load_pair(samples["g"], 3, IGNORE)
    np.testing.assert_array_equal(gt[0], [0, 1, IGNORE, IGNORE, IGNORE, 2])
    assert [p.kind for p in problems] == ["out of range"] and "8 pixel(s)" in problems[0].message
    with pytest.raises(EvaluationError, match=r"size mismatch: .*c.png: label is 6x5, image c.png is 6x4") as info:
        load_pair(samples["c"], 3, IGNORE)
    assert info.value.problem.kind == "size mismatch"
    with pytest.raises(EvaluationError, match=r"unreadable: .*f.png: expected a single-channel index map .* mode RGB"):
        load_pair(samples["f"], 3, IGNORE)
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(EvaluationError, match=r"unreadable: .*broken.png: not an image Pillow can decode"):
        load_pair(Sample("broken", images / "broken.png", labels / "a.png"), 3, IGNORE)


def test_subset_is_reproducible_and_in_stem_order():
    samples = [Sample(f"{i:03d}", None, None) for i in range(50)]
    first = choose_subset(samples, 10, seed=1)
    assert first == choose_subset(samples, 10, seed=1)
    assert first != choose_subset(samples, 10, seed=2)
    assert [s.stem for s in first] == sorted(s.stem for s in first) and len(set(first)) == 10
    assert choose_subset(samples, None) == samples and choose_subset(samples, 80) == samples
    with pytest.raises(EvaluationError, match="--limit must be at least 1, got 0"):
        choose_subset(samples, 0)


def test_missing_folder(tmp_path):
    with pytest.raises(EvaluationError, match=r"images folder .*nowhere does not exist"):
        pair_samples(tmp_path / "nowhere", tmp_path)
