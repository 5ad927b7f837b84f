"""sed-segment on good and bad images: outputs per image, one line per failure, nothing half-written."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from sed_deploy.core.errors import ArtifactError, VocabularyError
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.segment_cli import main


def _jpeg(image, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", **kwargs)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6
    good = {
        "plain.png": lambda p: rgb.save(p),
        "tiny.png": lambda p: Image.new("RGB", (1, 1), (9, 9, 9)).save(p),
        "huge.jpg": lambda p: Image.new("RGB", (6000, 4000), (90, 120, 30)).save(p, quality=50),
        "rgba.png": lambda p: rgb.convert("RGBA").save(p),
        "gray16.png": lambda p: Image.fromarray(rng.integers(0, 65535, (50, 70), dtype=np.uint16)).save(p),
        "cmyk.jpg": lambda p: p.write_bytes(_jpeg(rgb.convert("CMYK"))),
        "rotated.jpg": lambda p: p.write_bytes(_jpeg(rgb, exif=exif)),
    }
    bad = {"corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "empty.jpg": b"", "text.jpg": b"hello world\n"}
    for name, make in good.items():
        make(folder / name)
    for name, data in bad.items():
        (folder / name).write_bytes(data)
    return folder, list(good), list(bad)


def test_good_images_get_three_outputs_and_bad_ones_one_line_each(tiny_artifacts, images, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    folder, good, bad = images
    out = tmp_path / "out"
    code = main(["--artifacts", str(artifacts), "--vocab", str(artifacts.parent / "street.txt"),
                 *[str(folder / n) for n in good + bad], "-o", str(out), "-q"])
    captured = capsys.readouterr()
    assert code == 1
    for name in bad:
        assert sum(f"skipped: {folder / name}" in line for line in captured.out.splitlines()) == 1
    assert f"error: 3 of {len(good) + 3} image(s) could not be segmented (first: " in captured.err
    assert "Traceback" not in captured.err
    stems = {n.rsplit(".", 1)[0] for n in good}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{suffix}" for s in stems for suffix in ("_labels.png", "_overlay.png", ".json"))
    rotated = Image.open(out / "rotated_labels.png")
    assert rotated.size == (60, 80)  # EXIF orientation 6: 80x60 stored, shown rotated
    assert Image.open(out / "huge_labels.png").size == (6000, 4000)
    summary = json.loads((out / "plain.json").read_text())
    assert summary["vocabulary_size"] == 5 and abs(sum(c["share"] for c in summary["classes"]) - 1) < 1e-4
    assert set(summary["timings_ms"]) >= {"image_encoder", "cost", "decoder1", "decoder2", "decoder3", "total"}


def test_labels_are_16_bit_beyond_256_classes(tiny_artifacts, tmp_path):
    from sed_deploy.runtime.segment_cli import label_png

    assert label_png(np.array([[300]]), 459).mode == "I;16"
    assert label_png(np.array([[3]]), 150).mode == "L"


def test_same_stem_in_two_folders_does_not_overwrite():
    from pathlib import Path

    from sed_deploy.runtime.outputs import plan_bases

    assert plan_bases([Path("a/x.jpg"), Path("b/x.png"), Path("y.jpg")]) == ["x_jpg", "x_png", "y"]
    assert plan_bases([Path("a/x.jpg"), Path("b/x.jpg")]) == ["x_jpg", "x_jpg_2"]


def test_empty_vocabulary(tiny_artifacts, tmp_path, capsys):
    artifacts, _ = tiny_artifacts
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    assert main(["--artifacts", str(artifacts), "--vocab", str(empty), "x.png", "-o", str(tmp_path), "-q"]) == 1
    assert "the vocabulary is empty" in capsys.readouterr().err


def test_missing_or_tampered_graph(tiny_artifacts, tmp_path):
    artifacts, manifest = tiny_artifacts
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in artifacts.iterdir():
        if item.is_file():
            (copy / item.name).write_bytes(item.read_bytes())
    (copy / "decoder2.onnx").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="stage decoder2: .* does not match the manifest"):
        Pipeline.from_artifacts(copy, backend="ort")
    (copy / "decoder2.onnx").unlink()
    with pytest.raises(ArtifactError, match="decoder2.onnx is missing"):
        Pipeline.from_artifacts(copy, backend="ort")
    with pytest.raises(ArtifactError, match="artifacts folder .*nowhere does not exist"):
        Pipeline.from_artifacts(tmp_path / "nowhere", backend="ort")
    with pytest.raises(ArtifactError, match="no manifest.json in"):
        Pipeline.from_artifacts(tmp_path, backend="ort")


def test_inline_vocabulary_keeps_synonyms():
    from sed_deploy.runtime.vocabulary import vocabulary_from_arg

    assert vocabulary_from_arg("person,tree, forest,sky") == ["person", "tree, forest", "sky"]
    assert vocabulary_from_arg("sky") == ["sky"]  # not a file, not a known name: one class
    with pytest.raises(VocabularyError, match="vocabulary file no_such.txt does not exist"):
        vocabulary_from_arg("no_such.txt")
