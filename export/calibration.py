"""Calibration data for int8 graphs: the inputs each stage sees when the fp32 pipeline runs on the
user's images.

`calibration_images` picks the images of a folder (sorted by name, the first N); `record_feeds`
runs the fp32 graphs through the runtime's own `Pipeline` on ONNX Runtime (CPU, category early
rejection on with the manifest's k, as deployed) with the calibration vocabulary, and keeps a copy
of every stage's inputs per image. `calibration_digest` names the set (image contents, vocabulary,
count) for the manifest, so two exports calibrated differently are told apart.

The decoders' `keep` input is capped at `MAX_CALIB_CLASSES` classes (an even subset of the kept
ones): a stage's activation ranges are per tensor and do not depend on the number of classes (the
class-sum MatMuls, whose ranges would, stay float), while the quantizer's calibration run holds every
intermediate tensor of a stage at once, which at hundreds of classes on SED-B needs tens of GB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.errors import ConfigError, ImageError
from sed_deploy.core.manifest import Manifest
from sed_deploy.core.progress import progress
from sed_deploy.runtime.backends.onnxruntime import OrtBackend
from sed_deploy.runtime.backends.options import OrtOptions
from sed_deploy.runtime.decode import load_image
from sed_deploy.runtime.pipeline import Pipeline

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
MAX_CALIB_CLASSES = 32
DEFAULT_CALIB_COUNT = 8
DEFAULT_CALIB_VOCAB = "ade150"

Feeds = dict[str, np.ndarray]


def calibration_images(folder: str | Path, count: int) -> list[Path]:
    """The first `count` images of `folder` by name (fewer if it has fewer).

    Raises:
        ConfigError: the folder is missing, is not a folder, or holds no image file.
        ImageError: one of the chosen images cannot be decoded (each is decoded once here).
    """
    if count < 1:
        raise ConfigError(f"--calib-count must be at least 1, got {count}")
    path = Path(folder)
    if not path.exists():
        raise ConfigError(f"calibration folder {path} does not exist; give a folder of images with --calib-images")
    if not path.is_dir():
        raise ConfigError(f"--calib-images {path} is not a folder; give a folder of images")
    try:
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    except OSError as exc:
        raise ConfigError(f"cannot list calibration folder {path}: {exc.strerror or exc}") from None
    if not found:
        raise ConfigError(f"calibration folder {path} has no image files ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                          "put a few typical images of your use there")
    chosen = found[:count]
    for image in chosen:  # fail before minutes of export, not after
        try:
            load_image(image)
        except ImageError as exc:
            raise ImageError(f"calibration image: {exc}; remove it from {path} or fix it") from None
    return chosen


def calibration_digest(images: Sequence[Path], names: Sequence[str]) -> str:
    """sha256 over the images' contents (in order) and the vocabulary's names."""
    h = hashlib.sha256()
    for image in images:
        h.update(hashlib.sha256(image.read_bytes()).digest())
    h.update("\n".join(names).encode())
    return h.hexdigest()


class _RecordingBackend(OrtBackend):
    """An ONNX Runtime stage that keeps a copy of its feeds in `self.record` (a shared list per stage)."""

    record: list[Feeds] | None = None

    def _run(self, feeds):
        if self.record is not None:
            self.record.append(_capped({k: np.array(v, copy=True) for k, v in feeds.items()}))
        return super()._run(feeds)


def record_feeds(manifest: Manifest, folder: Path, images: Sequence[Path], text: np.ndarray,
                 names: Sequence[str], stages: Sequence[str] = IMAGE_STAGES, threads: int | None = None,
                 quiet: bool = False) -> dict[str, list[Feeds]]:
    """The inputs of `stages` per calibration image, from the fp32 graphs in `folder`.

    Args:
        manifest: the artifacts' manifest (fp32 graphs; not yet saved is fine).
        text: the vocabulary's text embeddings [T,P,D] float32.
        stages: the stages whose inputs are kept (the others run, unrecorded).

    Raises:
        ImageError: an image cannot be read (names it).
    """
    options = OrtOptions(providers=("cpu",), threads=threads)
    backends = _RecordingBackend.for_artifacts(manifest, folder, options)
    recorded: dict[str, list[Feeds]] = {stage: [] for stage in stages}
    for stage in stages:
        backends[stage].record = recorded[stage]
    pipeline = Pipeline(manifest, folder, backends, "ort", manifest.default_topk, cer=True)
    try:
        pipeline.set_vocabulary(list(names), embeddings=text, show_progress=False, normalize=False)
        for image in progress(images, len(images), "int8 calibration: fp32 pipeline", enabled=not quiet):
            try:
                pipeline(image)
            except ImageError as exc:
                raise ImageError(f"calibration image: {exc}") from None
    finally:
        pipeline.close()
    return recorded


def _capped(feeds: Feeds) -> Feeds:
    keep = feeds.get("keep")
    if keep is not None and len(keep) > MAX_CALIB_CLASSES:
        feeds["keep"] = keep[np.linspace(0, len(keep) - 1, MAX_CALIB_CLASSES).round().astype(int)]
    return feeds
