"""Overlay pictures and atomic writes."""

import numpy as np
import pytest

from sed_deploy.core.fileio import atomic_write, write_json
from sed_deploy.runtime.visualize import class_shares, overlay, palette


def test_palette_is_distinct_and_deterministic():
    colours = palette(459)
    assert colours.shape == (459, 3) and colours.dtype == np.uint8
    assert len({tuple(c) for c in colours}) == 459
    np.testing.assert_array_equal(colours, palette(459))


def test_overlay_has_a_legend_of_present_classes_only():
    image = np.full((60, 80, 3), 128, dtype=np.uint8)
    labels = np.zeros((60, 80), dtype=np.int32)
    labels[:, 40:] = 2
    picture = overlay(image, labels, ["sky", "never", "road"])
    assert picture.height == 60 and picture.width > 80
    assert class_shares(labels, 3) == [(0, 0.5), (2, 0.5)]
    left = np.asarray(picture)[30, 10].astype(int)
    expected = (0.45 * 128 + 0.55 * palette(3)[0]).round()
    assert np.abs(left - expected).max() <= 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(RuntimeError), atomic_write(path, "w") as f:
        f.write("{partial")
        raise RuntimeError("interrupted")
    assert path.read_text().strip().startswith("{") and '"v": 1' in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
