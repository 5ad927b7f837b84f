"""The embedded demo writes an overlay (tiny model, a generated image)."""

import numpy as np
from PIL import Image

from sed_deploy.model.demo import main


def test_demo_writes_an_overlay(tmp_path, capsys):
    image = tmp_path / "street.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 120, 3), dtype=np.uint8)).save(image)
    code = main(["--backbone", "tiny", "--image", str(image), "--vocab", "road,car,sky", "-o", str(tmp_path / "out")])
    assert code == 0
    out = tmp_path / "out" / "street_overlay.png"
    assert Image.open(out).size[1] == 90
    assert f"overlay written to {out}" in capsys.readouterr().out


def test_demo_bad_image_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    assert main(["--backbone", "tiny", "--image", str(bad), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "bad.jpg" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
