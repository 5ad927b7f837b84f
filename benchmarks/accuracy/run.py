"""The evaluation loop: every pair of a labelled folder through a predictor, into streaming statistics.

A predictor is any callable from an RGB image to a `Segmentation` (the pipeline itself, or a fake in
tests). The loop reads one pair at a time, so memory does not grow with the dataset except for one
small record per image; it keeps the confusion matrix, the cost of category early rejection, thumbnails
of the best and worst images, and, for other vocabularies evaluated on the same images (the noisy
names of the noise study), their confusion matrices and how often their label maps agree with the
clean one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.progress import Steps
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.segmentation import Segmentation

from .dataset import DEFAULT_MAX_PIXELS, Problem, Sample, load_pair
from .metrics import ConfusionMatrix, EvaluationError, RejectionStats, scores

Predict = Callable[[np.ndarray], Segmentation]
THUMBNAIL_SIDE = 256
CLEAN = -1  # `Variant.same_as` of a variant whose predictions are the clean vocabulary's


def vocabulary_predictor(pipeline: Pipeline, names: list[str], embeddings: np.ndarray) -> Predict:
    """A predictor that runs `pipeline` with this vocabulary (switching to it when another is set)."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)

    def predict(rgb: np.ndarray) -> Segmentation:
        if pipeline.text is not embeddings:
            pipeline.set_vocabulary(names, embeddings=embeddings, show_progress=False, normalize=False)
        return pipeline(rgb)

    return predict


@dataclass
class Variant:
    """Another vocabulary evaluated on the same images, class for class.

    Attributes:
        label: short description ("typos light, normalised").
        names: its class names (as many as the clean vocabulary).
        predict: its predictor; None when `same_as` says whose predictions it shares.
        same_as: index of an earlier variant with identical embeddings, or `CLEAN`; None if its own.
        info: anything to report beside its metrics (noise kind, names changed, cosine similarity).
    """

    label: str
    names: list[str]
    predict: Predict | None = None
    same_as: int | None = None
    info: dict = field(default_factory=dict)


@dataclass
class VariantTally:
    """Accumulated results of one variant."""

    confusion: ConfusionMatrix
    agreeing_pixels: int = 0
    pixels: int = 0

    @property
    def agreement(self) -> float:
        """Share of pixels whose label equals the clean vocabulary's."""
        return self.agreeing_pixels / self.pixels if self.pixels else float("nan")


@dataclass
class Panel:
    """Thumbnails of one image for the best / worst panels."""

    stem: str
    miou: float
    image: np.ndarray
    gt: np.ndarray
    pred: np.ndarray


def _thumbnail(rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray, side: int = THUMBNAIL_SIDE):
    height, width = gt.shape
    scale = min(4.0, side / max(height, width))  # small images are enlarged too, up to 4 times
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    rows = (np.arange(h) * height / h).astype(np.int64)
    cols = (np.arange(w) * width / w).astype(np.int64)
    image = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    return image, gt[rows][:, cols].copy(), pred[rows][:, cols].copy()


class Extremes:
    """The `count` best and `count` worst images by mean IoU, kept as thumbnails while streaming."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.best: list[Panel] = []
        self.worst: list[Panel] = []

    def offer(self, stem: str, miou: float, rgb: np.ndarray, gt: np.ndarray, pred: np.ndarray) -> None:
        if self.count <= 0 or not np.isfinite(miou):
            return
        self.seen += 1
        best_ok = len(self.best) < self.count or miou > self.best[-1].miou
        worst_ok = len(self.worst) < self.count or miou < self.worst[-1].miou
        if not (best_ok or worst_ok):
            return
        panel = Panel(stem, miou, *_thumbnail(rgb, gt, pred))
        if best_ok:
            self.best = sorted([*self.best, panel], key=lambda p: -p.miou)[: self.count]
        if worst_ok:
            self.worst = sorted([*self.worst, panel], key=lambda p: p.miou)[: self.count]

    def chosen(self) -> tuple[list[Panel], list[Panel]]:
        """(best, worst), best first and worst first; with fewer than twice `count` images they are
        shared out (the better half best), so that no image is in both lists."""
        best = self.best[: min(self.count, (self.seen + 1) // 2)]
        stems = {p.stem for p in best}
        return best, [p for p in self.worst if p.stem not in stems][: self.seen - len(best)]


@dataclass
class Evaluation:
    """Everything the report needs."""

    names: list[str]
    ignore_index: int
    confusion: ConfusionMatrix
    rejection: RejectionStats
    images: list[dict]
    problems: list[Problem]
    extremes: Extremes
    variants: list[Variant]
    tallies: list[VariantTally]


def _record(sample: Sample, result: Segmentation, image_matrix: np.ndarray, rejected: np.ndarray) -> dict:
    image_scores = scores(image_matrix)
    return {
        "stem": sample.stem,
        "image": str(sample.image),
        "size": list(result.labels.shape),
        **{k: v for k, v in image_scores.summary().items() if k in ("miou", "pixel_accuracy", "pixels")},
        "kept": {stage: [int(c) for c in ids] for stage, ids in zip(DECODERS, result.kept, strict=True)},
        "rejected_present": [int(c) for c in rejected],
        "timings_ms": {k: round(1000 * v, 3) for k, v in result.timings.items()},
    }


def _variant_labels(variants: Sequence[Variant], rgb: np.ndarray, clean: np.ndarray) -> list[np.ndarray]:
    labels: list[np.ndarray] = []
    for variant in variants:
        if variant.same_as is None:
            labels.append(variant.predict(rgb).labels)
        else:
            labels.append(clean if variant.same_as == CLEAN else labels[variant.same_as])
    return labels


def evaluate(samples: Sequence[Sample], predict: Predict, names: Sequence[str], ignore_index: int = 255,
             variants: Sequence[Variant] = (), panels: int = 3, problems: Sequence[Problem] = (),
             report: Callable[[str], None] | None = None, show_progress: bool = True,
             max_pixels: int = DEFAULT_MAX_PIXELS) -> Evaluation:
    """Run `predict` on every pair and accumulate the statistics.

    Args:
        samples: the pairs (`eval_dataset.pair_samples`).
        predict: RGB uint8 [H,W,3] -> `Segmentation` with class ids into `names`.
        names: the vocabulary the label maps index.
        ignore_index: label value excluded from every count.
        variants: other vocabularies to run on the same images.
        panels: how many best and worst images to keep for pictures.
        problems: problems found before (pairing); the loop adds its own.
        report: called with one line per new problem (default: printed above the progress bar).
        show_progress: progress bar on stderr.
        max_pixels: images and labels with more pixels are problems, refused before decoding.

    Raises:
        EvaluationError: no pair could be evaluated.
    """
    n = len(names)
    evaluation = Evaluation(list(names), ignore_index, ConfusionMatrix(n), RejectionStats(n), [], list(problems),
                            Extremes(panels), list(variants), [VariantTally(ConfusionMatrix(n)) for _ in variants])
    steps = Steps(len(samples), "evaluate", enabled=show_progress)
    say = report or steps.write
    try:
        for sample in samples:
            steps.label(sample.stem)
            _evaluate_one(evaluation, sample, predict, say, max_pixels)
            steps.advance()
    finally:
        steps.close()
    if not evaluation.images:
        raise nothing_to_evaluate(len(samples), evaluation.problems)
    return evaluation


def nothing_to_evaluate(pairs: int, problems: Sequence[Problem]) -> EvaluationError:
    """The error of a dataset with nothing left to evaluate, naming the first problem."""
    first = f" (first: {problems[0]})" if problems else ""
    return EvaluationError(f"no image could be evaluated: {pairs} pair(s), {len(problems)} problem(s){first}")


def _evaluate_one(evaluation: Evaluation, sample: Sample, predict: Predict, say: Callable[[str], None],
                  max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
    n = len(evaluation.names)
    try:
        rgb, gt, found = load_pair(sample, n, evaluation.ignore_index, max_pixels)
    except EvaluationError as exc:
        found = [exc.problem]
        rgb = None
    evaluation.problems += found
    for problem in found:
        say(str(problem))
    if rgb is None:
        return
    result = predict(rgb)
    image_matrix = evaluation.confusion.update(gt, result.labels, evaluation.ignore_index)
    rejected = evaluation.rejection.update(image_matrix.sum(axis=1), result.kept)
    record = _record(sample, result, image_matrix, rejected)
    evaluation.images.append(record)
    miou = record["miou"] if record["miou"] is not None else float("nan")
    evaluation.extremes.offer(sample.stem, miou, rgb, gt, result.labels)
    for tally, labels in zip(evaluation.tallies, _variant_labels(evaluation.variants, rgb, result.labels), strict=True):
        tally.confusion.update(gt, labels, evaluation.ignore_index)
        tally.agreeing_pixels += int((labels == result.labels).sum())
        tally.pixels += labels.size
