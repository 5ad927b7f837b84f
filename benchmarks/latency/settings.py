"""What sed-bench runs: the settings of category early rejection, and the images.

A setting is one way to run the pipeline: CER off (every class decoded), CER on with a k (the real
top-k union of the aux heads), or CER on with a k and a forced keep of N classes per pruned stage
(`forced_keep`). Settings run from the cheapest to the heaviest (forced, then real CER by growing k,
then CER off: each keeps at least the classes of the one before), so that a setting that runs out of
memory is the last one tried and the peak memory of each includes no heavier one before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS, load_image


@dataclass(frozen=True)
class Setting:
    """One pipeline configuration.

    Attributes:
        cer: category early rejection on.
        topk: k of CER (None when off).
        keep: forced number of classes per pruned stage (None: the real top-k union).
    """

    cer: bool
    topk: int | None = None
    keep: int | None = None

    @property
    def forced(self) -> bool:
        return self.keep is not None

    @property
    def key(self) -> str:
        """Short stable id: "off", "k8", "k8-keep32"."""
        if not self.cer:
            return "off"
        return f"k{self.topk}" + (f"-keep{self.keep}" if self.forced else "")

    @property
    def label(self) -> str:
        """What a person reads: "CER off", "CER k=8", "CER k=8, FORCED keep 32"."""
        if not self.cer:
            return "CER off"
        return f"CER k={self.topk}" + (f", FORCED keep {self.keep}" if self.forced else "")

    def cost_rank(self) -> tuple[int, int]:
        """Sort key: forced rows, then real CER by k, then CER off."""
        if not self.cer:
            return (2, 0)
        return (0 if self.forced else 1, self.topk or 0)

    def to_dict(self) -> dict:
        return {"key": self.key, "label": self.label, "cer": self.cer, "topk": self.topk, "keep": self.keep,
                "forced": self.forced}

    @classmethod
    def from_dict(cls, data: dict) -> Setting:
        return cls(cer=data["cer"], topk=data["topk"], keep=data["keep"])


def plan_settings(topks: list[int], cer: bool = True, baseline: bool = True, keep: int | None = None,
                  max_topk: int = 16) -> list[Setting]:
    """The settings of a run, in display order (CER off, real CER by k, forced CER by k).

    Args:
        topks: the k values of CER on.
        cer: include CER-on rows (False: only the CER-off baseline).
        baseline: include the CER-off row.
        keep: also add a forced row per k keeping this many classes.
        max_topk: the K the graphs were exported with (k must not exceed it).
    """
    bad = [k for k in topks if not 1 <= k <= max_topk]
    if bad:
        raise ConfigError(f"--topk values must be between 1 and {max_topk} (the K of these graphs), got {bad}")
    if keep is not None and keep < 1:
        raise ConfigError(f"--keep must be at least 1, got {keep}")
    settings = [Setting(cer=False)] if baseline or not cer else []
    if cer:
        ks = sorted(set(topks))
        settings += [Setting(cer=True, topk=k) for k in ks]
        if keep is not None:
            settings += [Setting(cer=True, topk=k, keep=keep) for k in ks]
    if not settings:
        raise ConfigError("nothing to run: --no-baseline needs CER-on rows (drop --no-cer)")
    return settings


def execution_order(settings: list[Setting]) -> list[Setting]:
    return sorted(settings, key=Setting.cost_rank)


def synthetic_image(height: int = 480, width: int = 640, seed: int = 0) -> np.ndarray:
    """A deterministic RGB uint8 picture (smooth gradients, a few blocks, mild noise).

    With random weights the content does not matter; with trained ones pass real photographs.
    """
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 64 * np.sin(x / 40) * np.cos(y / 30)], axis=-1)
    for _ in range(6):
        top, left = rng.integers(0, height // 2), rng.integers(0, width // 2)
        image[top : top + height // 4, left : left + width // 4] = rng.integers(0, 256, 3)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def load_images(paths: list[str] | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[np.ndarray]:
    """Decode the benchmark images once (RGB uint8); none given: one synthetic 640x480 picture."""
    if not paths:
        return [synthetic_image()]
    return [load_image(Path(p), max_pixels) for p in paths]
