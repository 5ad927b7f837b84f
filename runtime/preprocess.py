"""Image decoding and SED's pre-processing, in numpy and Pillow (no torch).

As the original test pipeline (spec section 2): decode to RGB 8-bit with the EXIF orientation
applied (`decode.load_image`, re-exported here); detectron2's ResizeShortestEdge (short side 640,
long side at most 2560, Pillow bilinear); normalise with the CLIP mean and std in the 0-255 scale;
bilinear resize (no antialias) to the model's square input, discarding the aspect ratio.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from sed_deploy.core.errors import ImageError
from sed_deploy.core.manifest import Preprocessing

from .decode import DEFAULT_MAX_PIXELS, ImageSource, load_image
from .resize import resize_bilinear

__all__ = ["DEFAULT_MAX_PIXELS", "ImageSource", "Preprocessing", "load_image", "preprocess", "resize_shortest_edge"]


def resize_shortest_edge(image: np.ndarray, short_side: int, max_long_side: int) -> np.ndarray:
    """detectron2's test-time ResizeShortestEdge on RGB uint8 (Pillow bilinear)."""
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max(new_h, new_w) > max_long_side:
        shrink = max_long_side / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    # detectron2 rounds a side of a very thin strip (3x50000) down to 0 pixels and fails; one pixel
    # is the closest size that exists, and every other image gets exactly detectron2's size
    size = (max(1, int(new_w + 0.5)), max(1, int(new_h + 0.5)))
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
