"""A labelled folder: images paired with label maps by file stem, read and checked one pair at a time.

Label maps are single-channel PNGs of class indices into the vocabulary: 8-bit (mode L or P, the
palette ignored) or 16-bit. `street_01.jpg` pairs with `street_01.png` in the labels folder (or
`street_01<suffix>.png` with a label suffix, such as CamVid's `_L`). What cannot be used is a
`Problem`, one line each, counted and reported, and never fatal on its own:

- ``missing label`` / ``missing image``: a file without its partner;
- ``duplicate``: two images (or labels) with the same stem; the first in name order is used;
- ``unreadable``: an image or label that cannot be decoded, or a label that is not an index map;
- ``size mismatch``: label and image of different sizes (the pair is skipped);
- ``out of range``: label values outside the vocabulary that are not the ignore index; those pixels
  are ignored and the rest of the image is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from sed_deploy.core.errors import ImageError, first_line
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS, check_pixel_budget, load_image, open_regular_file

from .metrics import EvaluationError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
LABEL_SUFFIX = ".png"
INDEX_MODES = ("L", "P", "1", "I;16", "I;16L", "I;16B", "I;16N", "I")
PROBLEM_KINDS = ("missing label", "missing image", "duplicate", "unreadable", "size mismatch", "out of range")
MAX_IGNORE_INDEX = 65535


@dataclass(frozen=True)
class Sample:
    """An image and its label map."""

    stem: str
    image: Path
    label: Path


@dataclass(frozen=True)
class Problem:
    """Something in the dataset that could not be used as is: one line."""

    kind: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "path": self.path, "message": self.message}


def _files(folder: Path, suffixes: tuple[str, ...], what: str) -> list[Path]:
    if not folder.is_dir():
        raise EvaluationError(f"{what} folder {folder} does not exist or is not a folder")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes
                  and not p.name.startswith("."))


def _by_stem(paths: list[Path], suffix: str, kind: str, problems: list[Problem]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        stem = path.stem[: -len(suffix)] if suffix and path.stem.endswith(suffix) else path.stem
        if stem in found:
            problems.append(Problem("duplicate", str(path), f"another {kind} has the stem {stem!r} "
                                    f"({found[stem].name}); using that one"))
            continue
        found[stem] = path
    return found


def pair_samples(images: str | Path, labels: str | Path, label_suffix: str = "") -> tuple[list[Sample], list[Problem]]:
    """Pair the images of one folder with the label PNGs of another by file stem.

    Args:
        images: folder of images (jpg, png, bmp, tif, webp); subfolders are not searched.
        labels: folder of label PNGs.
        label_suffix: ending of a label's stem that its image lacks (CamVid: "_L").

    Returns:
        (pairs sorted by stem, problems: missing partners and duplicate stems).
    """
    problems: list[Problem] = []
    image_files = _by_stem(_files(Path(images), IMAGE_SUFFIXES, "images"), "", "image", problems)
    label_files = _by_stem(_files(Path(labels), (LABEL_SUFFIX,), "labels"), label_suffix, "label", problems)
    samples = []
    for stem in sorted(image_files.keys() | label_files.keys()):
        if stem not in label_files:
            problems.append(Problem("missing label", str(image_files[stem]),
                                    f"no {stem}{label_suffix}{LABEL_SUFFIX} in {labels}"))
        elif stem not in image_files:
            problems.append(Problem("missing image", str(label_files[stem]),
                                    f"no image with the stem {stem!r} in {images}"))
        else:
            samples.append(Sample(stem, image_files[stem], label_files[stem]))
    return samples, problems


def choose_subset(samples: list[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """A reproducible random subset of `limit` samples (all of them when limit is None or larger), in stem order."""
    if limit is None or limit >= len(samples):
        return list(samples)
    if limit < 1:
        raise EvaluationError(f"--limit must be at least 1, got {limit}")
    chosen = np.random.default_rng(seed).choice(len(samples), size=limit, replace=False)
    return [samples[i] for i in sorted(chosen)]


def read_label(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A label PNG as [H,W] int64 class indices; raises `ImageError` (one line) if it is not an index map."""
    try:
        with open_regular_file(path) as f, Image.open(f) as image:
            check_pixel_budget(image.width, image.height, max_pixels, str(path))
            image.load()
            if image.mode not in INDEX_MODES:
                hint = " (colour-coded? convert it with `sed-eval convert`)" if image.mode.startswith("RGB") else ""
                raise ImageError(f"{path}: expected a single-channel index map (8- or 16-bit), "
                                 f"got mode {image.mode}{hint}")
            return np.asarray(image).astype(np.int64)
    except FileNotFoundError:
        raise ImageError(f"{path}: no such file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can decode") from None
    except ImageError:
        raise
    except Exception as exc:  # Pillow's plugins raise many types on malformed files
        raise ImageError(f"{path}: cannot decode label ({first_line(exc)})") from None


def check_ignore_index(ignore_index: int) -> int:
    if not 0 <= ignore_index <= MAX_IGNORE_INDEX:
        raise EvaluationError(f"the ignore index must be between 0 and {MAX_IGNORE_INDEX} (a label PNG value), "
                              f"got {ignore_index}")
    return ignore_index


def mask_out_of_range(labels: np.ndarray, num_classes: int, ignore_index: int, path: str) -> Problem | None:
    """Set values outside [0, num_classes) that are not the ignore index to it, in place; describe them."""
    bad = ((labels < 0) | (labels >= num_classes)) & (labels != ignore_index)
    if not bad.any():
        return None
    values = np.unique(labels[bad])
    labels[bad] = ignore_index
    shown = ", ".join(str(int(v)) for v in values[:5]) + (", ..." if len(values) > 5 else "")
    return Problem("out of range", path, f"{int(bad.sum())} pixel(s) with indices outside the vocabulary of "
                   f"{num_classes} classes ({shown}); ignored")


def load_pair(sample: Sample, num_classes: int, ignore_index: int,
              max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[np.ndarray, np.ndarray, list[Problem]]:
    """Read one pair: (RGB uint8 [H,W,3], labels [H,W] int64, problems of this pair).

    Raises:
        EvaluationError: the pair cannot be used at all (its message is the problem's line); the
            exception's `problem` attribute holds the `Problem`.
    """
    rgb = _read(load_image, sample.image, max_pixels)
    labels = _read(read_label, sample.label, max_pixels)
    if labels.shape != rgb.shape[:2]:
        raise _skip(Problem("size mismatch", str(sample.label),
                            f"label is {labels.shape[1]}x{labels.shape[0]}, image {sample.image.name} is "
                            f"{rgb.shape[1]}x{rgb.shape[0]} (width x height); skipped"))
    problem = mask_out_of_range(labels, num_classes, ignore_index, str(sample.label))
    return rgb, labels, [problem] if problem else []


def _read(reader, path: Path, max_pixels: int) -> np.ndarray:
    try:
        return reader(path, max_pixels)
    except ImageError as exc:
        raise _skip(Problem("unreadable", str(path), first_line(exc).removeprefix(f"{path}: "))) from None


def _skip(problem: Problem) -> EvaluationError:
    error = EvaluationError(str(problem))
    error.problem = problem
    return error
