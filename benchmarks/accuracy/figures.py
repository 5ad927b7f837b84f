"""Pictures of an evaluation: the confusion matrix of the most confused classes, and image panels.

Panels (image | ground truth | prediction, with a legend) need only Pillow. The confusion matrix
is drawn with matplotlib (the `bench` extra); without it that one picture is skipped with a warning.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from sed_deploy.core.fileio import atomic_write
from sed_deploy.core.optional import available, require
from sed_deploy.runtime.visualize import palette

from .metrics import most_confused_classes
from .run import Evaluation, Panel

CONFUSION_CLASSES = 15
IGNORE_COLOUR = (0, 0, 0)
LEGEND_ENTRIES = 10


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def colour_labels(labels: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Class ids [H,W] -> RGB uint8 [H,W,3] with the runtime's palette; the ignore index in black."""
    colours = palette(num_classes)
    valid = (labels >= 0) & (labels < num_classes)
    rgb = colours[np.where(valid, labels, 0)]
    rgb[~valid] = IGNORE_COLOUR
    if ignore_index is not None:
        rgb[labels == ignore_index] = IGNORE_COLOUR
    return rgb


def _legend_layout(entries: list[str], font, width: int, row: int) -> list[tuple[int, int]]:
    """(x, y) of each legend entry, flowing left to right and wrapping at `width`."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    x, y, places = 0, 0, []
    for text in entries:
        size = 18 + int(probe.textlength(text, font=font)) + 14
        if x and x + size > width:
            x, y = 0, y + row
        places.append((x, y))
        x += size
    return places


def panel_image(panel: Panel, names: Sequence[str], ignore_index: int, title: str) -> Image.Image:
    """image | ground truth | prediction side by side, a title above and a legend of the classes below."""
    n = len(names)
    tiles = [panel.image, colour_labels(panel.gt, n, ignore_index), colour_labels(panel.pred, n)]
    h, w = panel.gt.shape
    font, row = _font(14), 20
    valid_gt = panel.gt[(panel.gt >= 0) & (panel.gt < n)].ravel()
    counts = np.bincount(valid_gt, minlength=n) + np.bincount(panel.pred.ravel(), minlength=n)
    shown = [int(c) for c in np.argsort(-counts, kind="stable")[:LEGEND_ENTRIES] if counts[c]]
    width = 3 * w + 16
    places = _legend_layout([names[c][:40] for c in shown], font, width, row)
    legend_h = (places[-1][1] + row) if places else 0
    canvas = Image.new("RGB", (width, h + 2 * row + 8 + legend_h), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 2), title, fill="black", font=font)
    for i, (tile, caption) in enumerate(zip(tiles, ("image", "ground truth", "prediction"), strict=True)):
        x = i * (w + 8)
        draw.text((x + 2, row), caption, fill="black", font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, 2 * row))
    colours = palette(n)
    for c, (x, y) in zip(shown, places, strict=True):
        y += h + 2 * row + 6
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=tuple(int(v) for v in colours[c]), outline="black")
        draw.text((x + 18, y), names[c][:40], fill="black", font=font)
    return canvas


def confusion_figure(matrix: np.ndarray, names: Sequence[str], count: int = CONFUSION_CLASSES) -> bytes | None:
    """PNG bytes of the row-normalised confusion matrix of the most confused classes (matplotlib)."""
    if not available("matplotlib"):
        warnings.warn("matplotlib is not installed: confusion.png skipped (pip install 'sed-deploy[bench]')",
                      stacklevel=2)
        return None
    figure_module = require("matplotlib.figure", "the confusion matrix picture")
    agg = require("matplotlib.backends.backend_agg", "the confusion matrix picture")
    ids = most_confused_classes(matrix, count)
    if not len(ids):
        return None
    sub = matrix[np.ix_(ids, ids)].astype(np.float64)
    other = matrix[ids].sum(axis=1) - sub.sum(axis=1)  # pixels predicted as a class outside the picture
    rows = np.concatenate([sub, other[:, None]], axis=1)
    shares = rows / np.maximum(rows.sum(axis=1, keepdims=True), 1)
    labels = [names[c][:24] for c in ids]
    size = 2.5 + 0.45 * len(ids)
    figure = figure_module.Figure(figsize=(size + 1.5, size))
    agg.FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(shares, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(ids) + 1), [*labels, "(other)"], rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(ids)), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("share of each ground-truth class's pixels")
    if len(ids) <= 20:
        for (i, j), v in np.ndenumerate(shares):
            if v >= 0.005:
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v < 0.6 else "black")
    figure.colorbar(image, ax=ax, fraction=0.04)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _save(image: Image.Image, path: Path) -> None:
    with atomic_write(path) as f:
        image.save(f, format="PNG")


def write_figures(evaluation: Evaluation, out: Path) -> dict[str, list[str]]:
    """Write confusion.png and the panels; returns their file names by kind."""
    written: dict[str, list[str]] = {"confusion": [], "best": [], "worst": []}
    png = confusion_figure(evaluation.confusion.matrix, evaluation.names)
    if png is not None:
        with atomic_write(out / "confusion.png") as f:
            f.write(png)
        written["confusion"].append("confusion.png")
    best, worst = evaluation.extremes.chosen()
    for kind, panels in (("best", best), ("worst", worst)):
        for rank, panel in enumerate(panels, start=1):
            name = f"{kind}_{rank}_{panel.stem}.png"
            title = f"{kind} {rank}: {panel.stem}   mIoU {100 * panel.miou:.1f}%"
            _save(panel_image(panel, evaluation.names, evaluation.ignore_index, title), out / name)
            written[kind].append(name)
    return {k: v for k, v in written.items() if v}
