"""Image decoding and the original's pre-processing."""

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sed_deploy.core.errors import ImageError
from sed_deploy.model.config import CLIP_PIXEL_MEAN, CLIP_PIXEL_STD
from sed_deploy.runtime.preprocess import Preprocessing, load_image, preprocess, resize_shortest_edge

SETTINGS = Preprocessing(768, 640, 2560, CLIP_PIXEL_MEAN, CLIP_PIXEL_STD)


def _png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("shape,expected", [((480, 640), (640, 853)), ((640, 480), (853, 640)),
                                            ((100, 5000), (51, 2560)), ((1, 1), (640, 640))])
def test_resize_shortest_edge_sizes(shape, expected):
    out = resize_shortest_edge(np.zeros((*shape, 3), dtype=np.uint8), 640, 2560)
    assert out.shape[:2] == expected


def test_preprocess_matches_torch_normalise_then_interpolate():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    ours = preprocess(image, SETTINGS)
    resized = resize_shortest_edge(image, 640, 2560)
    x = torch.from_numpy(resized).permute(2, 0, 1).float()
    x = (x - torch.tensor(CLIP_PIXEL_MEAN)[:, None, None]) / torch.tensor(CLIP_PIXEL_STD)[:, None, None]
    ref = F.interpolate(x[None], size=(768, 768), mode="bilinear", align_corners=False).numpy()
    assert ours.shape == (1, 3, 768, 768) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "LA", "1", "CMYK"])
def test_modes_become_rgb8(mode):
    image = Image.new("RGB", (7, 5), (10, 200, 30)).convert(mode)
    out = load_image(_png(image) if mode != "CMYK" else image)
    assert out.shape == (5, 7, 3) and out.dtype == np.uint8


def test_16bit_grayscale_is_scaled_to_8bit():
    array = np.full((4, 6), 65535, dtype=np.uint16)
    array[0, 0] = 0
    out = load_image(_png(Image.fromarray(array)))
    assert out.dtype == np.uint8 and out[1, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [0, 0, 0]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (8, 4), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    image.save(buf, format="JPEG", exif=exif)
    assert load_image(buf.getvalue()).shape == (8, 4, 3)


@pytest.mark.parametrize("content", [b"", b"hello, I am text", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20])
def test_undecodable_bytes_are_one_line_errors(tmp_path, content):
    path = tmp_path / "photo.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="photo.jpg") as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "absent.png")
