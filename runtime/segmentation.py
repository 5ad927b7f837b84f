"""`Segmentation`: the result of one image, the same type whoever computed it (any backend, or a server).

A local pipeline fills every field; an answer of `sed-serve` carries the label map and the summary
only (`kept`, `scores` and `score_ids` stay None: the server does not send them), and `summary()`
is the same JSON either way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sed_deploy.core.contract import DECODERS

from .visualize import class_shares


@dataclass
class Segmentation:
    """The result of one image.

    Attributes:
        labels: [H,W] int32 class ids (into `names`) at the original image size.
        names: the vocabulary.
        kept: global class ids (int64, ascending) that entered decoder1, decoder2 and decoder3;
            with category early rejection off, every class at every stage. None in a server's answer.
        scores: [K,h,w] float32 sigmoid scores of the classes that reached the end, at the model's
            output resolution (S/4); every other class scores 0. None in a server's answer.
        score_ids: [K] their class ids (equal to `kept[2]`). None in a server's answer.
        timings: seconds per step: preprocess, the five image stages, postprocess, host (runtime
            work between stages: top-k union, keep formation, copies) and total.
        engines: what ran each image stage ("tensorrt fp16 (<engine file>)", "ort fp32", ...).
        backend: the backend that ran the stages.
        topk: k of category early rejection as it ran; None with CER off.
        kept_counts: classes entering each decoder, where `kept` is not known (a server's answer).
    """

    labels: np.ndarray
    names: list[str]
    kept: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    scores: np.ndarray | None = None
    score_ids: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)
    backend: str = ""
    topk: int | None = None
    kept_counts: dict[str, int] = field(default_factory=dict)

    def shares(self) -> list[tuple[int, float]]:
        """(class id, fraction of pixels) of the classes present, largest first."""
        return class_shares(self.labels, len(self.names))

    def kept_per_stage(self) -> dict[str, int]:
        if self.kept is None:
            return dict(self.kept_counts)
        return {stage: int(len(k)) for stage, k in zip(DECODERS, self.kept, strict=True)}

    def summary(self) -> dict:
        """A JSON-ready description: classes present with pixel shares, kept counts, timings."""
        return {
            "size": list(self.labels.shape),
            "classes": [{"id": c, "name": self.names[c], "share": round(s, 6)} for c, s in self.shares()],
            "kept_per_stage": self.kept_per_stage(),
            "timings_ms": {k: round(1000 * v, 3) for k, v in self.timings.items()},
            "engines": dict(self.engines),
        }
