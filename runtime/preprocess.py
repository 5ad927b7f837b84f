"""Image decoding and SED's pre-processing, in numpy and Pillow (no torch).

As the original test pipeline (spec section 2): decode to RGB 8-bit with the EXIF orientation
applied; detectron2's ResizeShortestEdge (short side 640, long side at most 2560, Pillow bilinear);
normalise with the CLIP mean and std in the 0-255 scale; bilinear resize (no antialias) to the
model's square input, discarding the aspect ratio.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError, first_line
from .resize import resize_bilinear

ImageSource = str | Path | bytes | Image.Image | np.ndarray


@dataclass(frozen=True)
class Preprocessing:
    """The settings of pre-processing, recorded in every manifest.

    Attributes:
        image_size: side of the square model input (768 for B and L).
        short_side: target of the shortest edge before that (640).
        max_long_side: cap on the longest edge after the first resize (2560).
        mean: per-channel mean in the 0-255 scale (RGB).
        std: per-channel std in the 0-255 scale (RGB).
    """

    image_size: int
    short_side: int
    max_long_side: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def load_image(source: ImageSource) -> np.ndarray:
    """Decode an image to RGB uint8 [H,W,3], EXIF orientation applied.

    Accepts a path, encoded bytes, a PIL image, or an array ([H,W], [H,W,3] or [H,W,4]).
    Raises `ImageError` with one line if it cannot be decoded.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb8(source)
    name = "image bytes" if isinstance(source, bytes) else str(source)
    try:
        if isinstance(source, Image.Image):
            image = source
        else:
            image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
            image.load()
        image = ImageOps.exif_transpose(image)
        return _pil_to_rgb8(image)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can decode (corrupt, empty or another format)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{name}: cannot decode image ({first_line(exc)})") from None


def _pil_to_rgb8(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb8(np.asarray(image))
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb8(array: np.ndarray) -> np.ndarray:
    """Grey, RGB or RGBA arrays of any integer or float type -> RGB uint8 (alpha dropped)."""
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] in (3, 4):
        a = a[..., :3]
    elif a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    else:
        raise ImageError(f"expected an image array [H,W], [H,W,3] or [H,W,4], got shape {list(a.shape)}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        peak = 1.0 if float(np.nanmax(a, initial=0.0)) <= 1.0 else 255.0
        return np.clip(np.nan_to_num(a) * (255.0 / peak), 0, 255).round().astype(np.uint8)
    # 16-bit samples (Pillow's I;16, or I holding values above 255) map their full range onto 8 bits
    sixteen_bit = a.dtype == np.uint16 or int(a.max(initial=0)) > 255
    scale = 255.0 / 65535.0 if sixteen_bit else 1.0
    return np.clip(a.astype(np.float64) * scale, 0, 255).round().astype(np.uint8)


def resize_shortest_edge(image: np.ndarray, short_side: int, max_long_side: int) -> np.ndarray:
    """detectron2's test-time ResizeShortestEdge on RGB uint8 (Pillow bilinear)."""
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_long_side:
        shrink = max_long_side / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    size = (int(new_w + 0.5), int(new_h + 0.5))
    return np.array(Image.fromarray(image).resize(size, Image.BILINEAR))


def preprocess(image: np.ndarray, settings: Preprocessing) -> np.ndarray:
    """RGB uint8 [H,W,3] -> the model input [1,3,S,S] float32."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ImageError(f"expected an RGB uint8 image [H,W,3], got {image.dtype} {list(image.shape)}")
    resized = resize_shortest_edge(image, settings.short_side, settings.max_long_side)
    mean = np.asarray(settings.mean, dtype=np.float32)[:, None, None]
    std = np.asarray(settings.std, dtype=np.float32)[:, None, None]
    chw = (resized.transpose(2, 0, 1).astype(np.float32) - mean) / std
    square = resize_bilinear(chw, settings.image_size, settings.image_size)
    return np.ascontiguousarray(square[None], dtype=np.float32)
