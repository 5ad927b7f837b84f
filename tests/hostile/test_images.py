"""Hostile images: bombs, truncations, extreme shapes, odd modes, special files, through the API and the CLIs.

Each class of defect has generated cases. A bad image is one line and is skipped (the batch goes on);
a strange but valid one (CMYK, 16-bit, a 3x5000 strip, an animation) is segmented.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sed_deploy.core.errors import ImageError
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS, load_image
from sed_deploy.runtime.outputs import plan_bases
from sed_deploy.runtime.segment_cli import main as segment

from .conftest import cli, digest, no_partial, one_error_line, run_tool


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, raw: bytes, interlace: int = 0, colour: int = 2) -> bytes:
    """A PNG written by hand, so that its header can say anything."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 9))
            + _chunk(b"IEND", b""))


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


RGB = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8))
JPEG = encoded(RGB, "JPEG")
PNG = encoded(RGB, "PNG")

# name -> (bytes, substring of the error); all must fail with one line
BAD = {
    "bomb.png": (png(12000, 12000, b"\0" * 64), "more than the pixel budget"),  # 219-byte class of bomb
    "wide_bomb.png": (png(2_000_000, 40, b"\0" * 64), "more than the pixel budget"),
    "short_idat.png": (png(100, 100, b"\0" * 301 * 10), "truncated"),  # zlib ends early: Pillow fills zeros
    "interlaced_short.png": (png(64, 64, b"\0" * 100, interlace=1), "truncated"),
    "header_only.png": (PNG[:33], "not an image"),
    "cut_png.png": (PNG[: len(PNG) // 2], "truncated"),
    "cut_jpeg.jpg": (JPEG[: len(JPEG) // 2], "truncated"),
    "header_only.jpg": (JPEG[:200], "cannot decode"),
    "empty.jpg": (b"", "not an image"),
    "text.png": (b"hello, I am not a picture\n", "not an image"),
    "zero_size.png": (png(0, 0, b""), "not an image"),
}
# name -> bytes; all must be segmented
GOOD = {
    "strip_3x5000.png": encoded(Image.new("RGB", (3, 5000), (200, 10, 10)), "PNG"),
    "strip_5000x3.png": encoded(Image.new("RGB", (5000, 3), (10, 200, 10)), "PNG"),
    "strip_1x20000.png": encoded(Image.new("L", (1, 20000), 77), "PNG"),
    "one_pixel.png": encoded(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"),
    "cmyk.jpg": encoded(RGB.convert("CMYK"), "JPEG"),
    "palette_transparent.png": encoded(RGB.convert("P"), "PNG", transparency=0),
    "gray16.png": encoded(Image.fromarray(np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) * 29), "PNG"),
    "gray_alpha.png": encoded(RGB.convert("LA"), "PNG"),
    "bilevel.png": encoded(RGB.convert("1"), "PNG"),
    "float.tif": encoded(RGB.convert("F"), "TIFF"),
    "animated.gif": encoded(RGB.convert("P"), "GIF", save_all=True,
                            append_images=[RGB.rotate(90).convert("P")] * 3),
    "animated.png": encoded(RGB, "PNG", save_all=True, append_images=[RGB.rotate(180)]),
}


def _special_files(folder: Path) -> dict[str, str]:
    """Things that are not files: each must be refused at once (never block, never read forever)."""
    fifo = folder / "fifo.png"
    os.mkfifo(fifo)
    (folder / "folder.png").mkdir()
    loop = folder / "loop.png"
    loop.symlink_to(loop)
    return {str(fifo): "is a FIFO", str(folder / "folder.png"): "is a directory", "/dev/zero": "is a device",
            str(loop): "symbolic links", str(folder / "missing.png"): "no such file"}


@pytest.fixture(scope="module")
def hostile_images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile_images")
    for name, (data, _) in BAD.items():
        (folder / name).write_bytes(data)
    for name, data in GOOD.items():
        (folder / name).write_bytes(data)
    return folder, _special_files(folder)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_image_is_one_line(hostile_images, name):
    folder, _ = hostile_images
    with pytest.raises(ImageError, match=BAD[name][1]) as info:
        load_image(folder / name)
    assert "\n" not in str(info.value) and str(folder / name) in str(info.value)
    with pytest.raises(ImageError, match=BAD[name][1]):
        load_image((folder / name).read_bytes())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_odd_but_valid_image_decodes_to_rgb(hostile_images, name):
    folder, _ = hostile_images
    rgb = load_image(folder / name)
    with Image.open(folder / name) as image:
        assert rgb.shape == (image.height, image.width, 3) and rgb.dtype == np.uint8


def test_special_files_are_refused_without_blocking(hostile_images):
    _, special = hostile_images
    for path, message in special.items():
        with pytest.raises(ImageError, match=message):
            load_image(path)


def test_the_pixel_budget_is_the_callers(hostile_images):
    folder, _ = hostile_images
    assert load_image(folder / "strip_3x5000.png", max_pixels=15_000).shape == (5000, 3, 3)
    with pytest.raises(ImageError, match="15,000 pixels, more than the pixel budget of 14,999"):
        load_image(folder / "strip_3x5000.png", max_pixels=14_999)
    assert DEFAULT_MAX_PIXELS == 64_000_000


def test_a_batch_of_hostile_images_skips_each_bad_one_in_one_line(tiny_artifacts, hostile_images, vocab_file,
                                                                 tmp_path, capsys):
    folder, special = hostile_images
    artifacts, _ = tiny_artifacts
    before = digest(folder)
    inputs = [*(str(folder / n) for n in (*BAD, *GOOD)), *special]
    out = tmp_path / "out"
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, *inputs, "-o", out], capsys)
    failed = len(BAD) + len(special)
    one_error_line(outcome, f"{failed} of {len(inputs)} image(s) could not be segmented")
    skipped = [line for line in outcome.out.splitlines() if line.startswith("skipped: ")]
    assert len(skipped) == failed
    assert sorted(p.name for p in out.glob("*.json")) == sorted(
        f"{base}.json" for base in plan_bases(list(GOOD)))  # animated.gif, animated.png -> animated_gif, _png
    assert Image.open(out / "strip_3x5000_labels.png").size == (3, 5000)
    no_partial(out)
    assert digest(folder) == before


def test_one_bad_image_is_exactly_its_own_line(tiny_artifacts, hostile_images, vocab_file, tmp_path, capsys):
    folder, _ = hostile_images
    artifacts, _ = tiny_artifacts
    outcome = cli(segment, ["--artifacts", artifacts, "--vocab", vocab_file, folder / "short_idat.png",
                            "-o", tmp_path / "out"], capsys)
    assert "the PNG is truncated" in one_error_line(outcome)
    assert not (tmp_path / "out").exists()  # nothing published: the folder the run made is gone


def test_a_decompression_bomb_costs_no_memory(tiny_artifacts, hostile_images, vocab_file, tmp_path):
    """A 219-byte PNG declaring 12000x12000 pixels once took 4-6 GB; now it is refused from its header.

    The bound: a run that decodes nothing big stays far under 1.5 GB (the process with ONNX Runtime and
    the tiny model takes a few hundred MB); decoding the bomb alone would need 432 MB more, plus the
    label map and overlay at full size, gigabytes.
    """
    folder, _ = hostile_images
    artifacts, _ = tiny_artifacts
    outcome = run_tool("sed-segment", ["--artifacts", artifacts, "--vocab", vocab_file, folder / "bomb.png",
                                       "-o", tmp_path / "out"], tmp_path, tmp_path, timeout=300)
    one_error_line(outcome, "more than the pixel budget")
    assert 0 < outcome.peak_mb < 1500, outcome.peak_mb


def test_thin_strips_in_the_api_and_sed_eval(tiny_artifacts, hostile_images, tmp_path, capsys):
    """The strip that aborted whole batches: the pipeline, and sed-eval with a label of the same shape."""
    from sed_deploy.benchmarks.accuracy.cli import main as evaluate
    from sed_deploy.runtime.pipeline import Pipeline

    folder, _ = hostile_images
    artifacts, _ = tiny_artifacts
    with Pipeline.from_artifacts(artifacts, backend="ort") as pipeline:
        pipeline.set_vocabulary(["sky", "road"], show_progress=False)
        assert pipeline(folder / "strip_3x5000.png").labels.shape == (5000, 3)
        assert pipeline(np.zeros((2, 30000, 3), np.uint8)).labels.shape == (2, 30000)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    (images / "strip.png").write_bytes(GOOD["strip_3x5000.png"])
    Image.new("L", (3, 5000), 1).save(labels / "strip.png")
    (images / "bomb.png").write_bytes(BAD["bomb.png"][0])
    Image.new("L", (3, 3), 1).save(labels / "bomb.png")
    code = evaluate(["--artifacts", str(artifacts), "--images", str(images), "--labels", str(labels),
                     "--vocab", "sky,road", "-o", str(tmp_path / "report"), "-q", "--no-figures"])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err, captured.err
    assert "more than the pixel budget" in captured.out + captured.err  # the bomb: one problem line
