"""Pictures of a segmentation: a colour overlay with a legend of the classes present (Pillow only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

LEGEND_ROWS = 40  # classes listed at most; the rest are summed up in one line


def palette(num_classes: int) -> np.ndarray:
    """Distinct, deterministic colours, [num_classes,3] uint8.

    The bits of the class id are spread over the high bits of R, G and B in turn (the scheme of
    the PASCAL VOC colour map), so neighbouring ids get very different colours.
    """
    ids = np.arange(num_classes, dtype=np.int64)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    value = ids + 1  # id 0 would be black
    for shift in range(7, -1, -1):
        for channel in range(3):
            colours[:, channel] |= ((value >> channel) & 1) << shift
        value >>= 3
    return colours.astype(np.uint8)


def class_shares(labels: np.ndarray, num_classes: int) -> list[tuple[int, float]]:
    """(class id, fraction of pixels) of the classes present, largest first."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    return [(int(c), float(counts[c]) / labels.size) for c in order]


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def overlay(image: np.ndarray, labels: np.ndarray, names: Sequence[str], alpha: float = 0.55) -> Image.Image:
    """The image with each pixel tinted by its class colour, and a legend panel on the right.

    Args:
        image: RGB uint8 [H,W,3].
        labels: class ids [H,W] into `names`.
        names: the vocabulary.
        alpha: weight of the class colour.
    """
    colours = palette(len(names))
    tinted = (1 - alpha) * image.astype(np.float32) + alpha * colours[labels].astype(np.float32)
    picture = Image.fromarray(np.clip(tinted + 0.5, 0, 255).astype(np.uint8))
    font_size = max(12, min(28, image.shape[0] // 40))
    font = _font(font_size)
    row = font_size + 8
    shares = class_shares(labels, len(names))
    lines = [(colours[c], f"{names[c].strip()}  {100 * s:.1f}%") for c, s in shares[:LEGEND_ROWS]]
    if len(shares) > LEGEND_ROWS:
        rest = sum(s for _, s in shares[LEGEND_ROWS:])
        lines.append((None, f"... {len(shares) - LEGEND_ROWS} more classes, {100 * rest:.1f}%"))
    draw_probe = ImageDraw.Draw(picture)
    text_width = max((int(draw_probe.textlength(text, font=font)) for _, text in lines), default=0)
    panel_w = row + 12 + text_width + 16
    canvas = Image.new("RGB", (picture.width + panel_w, max(picture.height, row * len(lines) + 16)), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, (colour, text) in enumerate(lines):
        y = 8 + i * row
        x = picture.width + 8
        if colour is not None:
            draw.rectangle([x, y, x + font_size, y + font_size], fill=tuple(int(v) for v in colour), outline="black")
        draw.text((x + font_size + 8, y), text, fill="black", font=font)
    return canvas
