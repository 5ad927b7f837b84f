"""Colour-coded labels -> index maps: CamVid's table, unknown colours, JSON tables, the vocabulary file."""

import json

import numpy as np
import pytest
from PIL import Image

from sed_deploy.benchmarks.accuracy.cli import main
from sed_deploy.benchmarks.accuracy.converters import (
    CAMVID,
    ColourTable,
    colours_to_index,
    convert_folder,
    table_from_json,
)
from sed_deploy.benchmarks.accuracy.dataset import pair_samples, read_label
from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.vocabulary import read_vocabulary

ROAD, SKY, CAR, VOID, UNKNOWN = (128, 64, 128), (128, 128, 128), (64, 0, 128), (0, 0, 0), (1, 2, 3)


def test_camvid_table_is_camvids():
    assert len(CAMVID.names) == 31 and CAMVID.ignore == (VOID,)  # 32 colours: 31 classes and Void
    assert len(set(CAMVID.colours)) == 31
    by_source = dict(zip(CAMVID.sources, CAMVID.colours, strict=True))
    assert by_source["Road"] == ROAD and by_source["Sky"] == SKY and by_source["Car"] == CAR
    assert by_source["TrafficLight"] == (0, 64, 64) and by_source["Column_Pole"] == (192, 192, 128)
    assert CAMVID.names[CAMVID.sources.index("SUVPickupTruck")] == "suv, pickup truck"


@pytest.fixture()
def painted(tmp_path):
    folder = tmp_path / "LabeledApproved_full"
    folder.mkdir()
    first = np.array([[ROAD, ROAD, SKY], [CAR, VOID, UNKNOWN]], dtype=np.uint8)
    Image.fromarray(first).save(folder / "0001TP_006690_L.png")
    Image.fromarray(np.array([[SKY, SKY]], dtype=np.uint8)).save(folder / "0001TP_006720_L.png")
    Image.fromarray(np.zeros((2, 2), dtype=np.uint8)).save(folder / "grey_L.png")  # not a colour label
    return folder


def test_colours_to_index():
    rgb = np.array([[ROAD, SKY], [VOID, UNKNOWN]], dtype=np.uint8)
    index, unknown, count = colours_to_index(rgb, CAMVID, ignore_index=255)
    road, sky = CAMVID.sources.index("Road"), CAMVID.sources.index("Sky")
    np.testing.assert_array_equal(index, [[road, sky], [255, 255]])
    np.testing.assert_array_equal(unknown, [UNKNOWN])
    assert count == 1


def test_convert_camvid_folder(painted, tmp_path, capsys):
    out = tmp_path / "labels"
    code = main(["convert", "camvid", "--rgb-labels", str(painted), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    lines = captured.out.splitlines()
    assert sum("unknown colour" in line and "0001TP_006690_L.png" in line and "#010203" in line for line in lines) == 1
    assert sum("unreadable" in line and "grey_L.png" in line and "mode L" in line for line in lines) == 1
    assert "2 label map(s) written" in lines[-1] and "1 pixel(s) of unknown colours" in lines[-1]
    assert sorted(p.name for p in out.iterdir()) == ["0001TP_006690.png", "0001TP_006720.png", "colours.json",
                                                     "vocabulary.txt"]
    labels = read_label(out / "0001TP_006690.png")
    road, sky, car = (CAMVID.sources.index(s) for s in ("Road", "Sky", "Car"))
    np.testing.assert_array_equal(labels, [[road, road, sky], [car, 255, 255]])
    assert Image.open(out / "0001TP_006690.png").mode == "L"
    assert read_vocabulary(out / "vocabulary.txt") == list(CAMVID.names)
    # the index maps pair with CamVid's images by stem
    images = tmp_path / "701_StillsRaw_full"
    images.mkdir()
    Image.new("RGB", (3, 2)).save(images / "0001TP_006690.png")
    samples, problems = pair_samples(images, out)
    assert [s.stem for s in samples] == ["0001TP_006690"] and [p.kind for p in problems] == ["missing image"]


def test_written_table_reads_back_and_converts_the_same(painted, tmp_path):
    first = tmp_path / "first"
    convert_folder(CAMVID, painted, first, report=lambda line: None)
    table = table_from_json(first / "colours.json")
    assert table == CAMVID
    second = tmp_path / "second"
    main(["convert", "--table", str(first / "colours.json"), "--rgb-labels", str(painted), "-o", str(second), "-q"])
    for name in ("0001TP_006690.png", "0001TP_006720.png"):
        np.testing.assert_array_equal(read_label(first / name), read_label(second / name))


def test_a_json_table_from_the_command_line(painted, tmp_path):
    table = tmp_path / "mine.json"
    classes = [{"name": "road", "colour": list(ROAD)}, {"name": "sky", "color": "#808080"}]
    table.write_text(json.dumps({"classes": classes, "ignore": [list(VOID)]}))
    out = tmp_path / "out"
    assert main(["convert", "--table", str(table), "--rgb-labels", str(painted), "-o", str(out),
                 "--label-suffix", "_L", "--ignore-index", "300"]) == 0
    labels = read_label(out / "0001TP_006690.png")
    np.testing.assert_array_equal(labels, [[0, 0, 1], [300, 300, 300]])  # car is unknown to this table
    assert Image.open(out / "0001TP_006690.png").mode.startswith("I")  # 300 needs 16 bits
    assert read_vocabulary(out / "vocabulary.txt") == ["road", "sky"]


@pytest.mark.parametrize("content, message", [
    ("{", "is not valid JSON"),
    ('{"classes": []}', 'expected an object with a non-empty list "classes"'),
    ('{"classes": [{"name": "road"}]}', r"class #0: expected a colour \[r, g, b\] \(0-255\) or \"#rrggbb\", got None"),
    ('{"classes": [{"name": "a", "colour": [1, 2, 300]}]}', r"got \[1, 2, 300\]"),
    ('{"classes": [{"name": "a", "colour": "#010203"}, {"name": "b", "colour": [1, 2, 3]}]}',
     "colour #010203 is given to both 'a' and 'b'"),
])
def test_bad_tables_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        table_from_json(path)


def test_conversion_errors(painted, tmp_path, capsys):
    assert main(["convert", "--rgb-labels", str(painted), "-o", str(tmp_path / "o")]) == 1
    assert "error: give a dataset name (camvid) or --table FILE, one of the two" in capsys.readouterr().err
    assert main(["convert", "camvid", "--rgb-labels", str(painted), "-o", str(tmp_path / "o"),
                 "--ignore-index", "3"]) == 1
    assert "the ignore index 3 is a class id of the 31 classes" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["convert", "camvid", "--rgb-labels", str(empty), "-o", str(tmp_path / "o")]) == 1
    assert "no colour label image could be converted" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="expected one colour per class name, got 2 names and 1 colours"):
        ColourTable("x", ("a", "b"), ((1, 2, 3),))
