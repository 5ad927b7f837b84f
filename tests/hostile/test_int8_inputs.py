"""sed-export --precision int8 with bad calibration input: one error line, before anything is built or written."""

from __future__ import annotations

import pytest
from conftest import write_calibration_images

from sed_deploy.export.cli import main as export

from .conftest import cli, one_error_line


def _calib(tmp_path, kind: str):
    folder = tmp_path / "calib"
    if kind == "missing":
        return folder
    if kind == "a file":
        folder.write_text("not a folder")
        return folder
    folder.mkdir()
    if kind == "only non-images":
        (folder / "notes.txt").write_text("hello")
        (folder / "sub.png").mkdir()  # a folder named like an image
    if kind == "a broken png":
        write_calibration_images(folder, count=2)
        (folder / "calib0.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    if kind == "a text file named .jpg":
        (folder / "photo.jpg").write_text("not an image")
    return folder


CASES = {
    "missing": "does not exist; give a folder of images with --calib-images",
    "a file": "is not a folder; give a folder of images",
    "empty": "has no image files",
    "only non-images": "has no image files",
    "a broken png": "calibration image:",
    "a text file named .jpg": "calibration image:",
}


@pytest.mark.parametrize("kind", CASES)
def test_bad_calibration_folders_are_one_line_and_write_nothing(kind, tmp_path, capsys):
    folder = _calib(tmp_path, kind)
    outcome = cli(export, ["--backbone", "tiny", "--precision", "int8", "--calib-images", folder,
                           "-o", tmp_path / "out"], capsys)
    one_error_line(outcome, CASES[kind])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "expect"), [
    (["--calib-images", "{calib}"], "--calib-images is for int8 graphs only"),
    (["--precision", "fp16", "--calib-images", "{calib}"], "--calib-images is for int8 graphs only"),
    (["--precision", "int8"], "--precision int8 needs calibration images"),
    (["--precision", "int8", "--calib-images", "{calib}", "--calib-count", "0"], "--calib-count must be at least 1"),
    (["--precision", "int8", "--calib-images", "{calib}", "--calib-count", "-3"], "--calib-count must be at least 1"),
    (["--precision", "int8", "--calib-images", "{calib}", "--calib-vocab", "ade15O"], "ade15O"),
    (["--precision", "int8", "--calib-images", "{calib}", "--int8-tolerance", "0"], "--int8-tolerance must be above 0"),
])
def test_bad_int8_options_are_one_line_and_write_nothing(args, expect, tmp_path, capsys):
    calib = write_calibration_images(tmp_path / "calib", count=1)
    given = [a.format(calib=calib) for a in args]
    outcome = cli(export, ["--backbone", "tiny", *given, "-o", tmp_path / "out"], capsys)
    one_error_line(outcome, expect)
    assert not (tmp_path / "out").exists()
