"""How far a reduced-precision row is from the fp32 row of the same backend, on the same images.

Any precision other than fp32 (fp16 graphs or engines, bf16 on openvino, int8 when it comes) is
compared with the fp32 run of the same backend, setting by setting: the workers of both record the
outputs of their first timed call on each image (`record_outputs`, `save_outputs`), and
`error_tables` compares them once every backend has run:

- max relative error of the final scores: max |score - fp32 score| over every class and pixel,
  divided by the largest fp32 score (a class rejected by CER on one side scores 0 there);
- label agreement: share of pixels of the label maps that agree (mean and worst image);
- Jaccard of the kept sets per stage: |A & B| / |A | B| of the class ids alive (mean and worst).

On random weights the scores of many classes are nearly equal at most pixels, so a rounding
difference flips labels and kept classes that trained weights would separate clearly: the label
agreement and Jaccard are pessimistic there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.fileio import atomic_write
from sed_deploy.runtime.segmentation import Segmentation

REFERENCE = "fp32"
STAGES = DECODERS
NOTE = ("Reduced-precision rows are compared with the fp32 row of the same backend on the same images (first "
        "timed call of each image). With random weights many classes nearly tie at most pixels, so label "
        "agreement and kept-set Jaccard are pessimistic: a rounding difference flips what trained weights "
        "would separate clearly.")


def is_reduced(precision: str | None) -> bool:
    return precision not in (None, REFERENCE)


def is_reference(backend: str, precision: str | None) -> bool:
    """The fp32 row of `backend` (a backend's default is fp32 except on tensorrt, which picks its engines)."""
    return precision == REFERENCE or (precision is None and backend != "tensorrt")


def record_outputs(result: Segmentation) -> dict[str, np.ndarray]:
    kept = {f"kept{i}": np.asarray(k) for i, k in enumerate(result.kept, start=1)}
    return {"scores": np.asarray(result.scores), "ids": np.asarray(result.score_ids),
            "labels": np.asarray(result.labels), **kept}


def save_outputs(folder: str | Path, index: int, outputs: dict[str, np.ndarray]) -> None:
    """Write one image's outputs to `<folder>/<index>.npz` (right after its call, so nothing is held)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    with atomic_write(Path(folder) / f"{index}.npz", "wb") as f:
        np.savez(f, **outputs)


def load_outputs(folder: str | Path) -> list[dict[str, np.ndarray]]:
    """The outputs `save_outputs` wrote into `folder`, in image order."""
    found = []
    for path in sorted(Path(folder).glob("*.npz"), key=lambda p: int(p.stem)):
        with np.load(path) as data:
            found.append({name: data[name] for name in data.files})
    return found


def _dense(found: dict[str, np.ndarray], ids: np.ndarray) -> np.ndarray:
    """Scores of classes `ids` (sorted), zero for classes this run rejected."""
    out = np.zeros((len(ids), *found["scores"].shape[1:]), np.float32)
    out[np.searchsorted(ids, found["ids"])] = found["scores"]
    return out


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = np.union1d(a, b)
    return 1.0 if len(union) == 0 else len(np.intersect1d(a, b)) / len(union)


def compare_image(reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]) -> dict:
    ids = np.union1d(reference["ids"], candidate["ids"])
    want, got = _dense(reference, ids), _dense(candidate, ids)
    scale = float(np.abs(want).max()) or 1.0
    return {"max_relative_error": float(np.abs(got - want).max()) / scale,
            "label_agreement": float(np.mean(reference["labels"] == candidate["labels"])),
            "jaccard": {stage: _jaccard(reference[f"kept{i}"], candidate[f"kept{i}"])
                        for i, stage in enumerate(STAGES, start=1)}}


def compare(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]]) -> dict:
    """The error table of one reduced-precision run against its fp32 run (same images, same order)."""
    if len(reference) != len(candidate) or not reference:
        raise ValueError(f"expected the same images on both sides, got {len(reference)} and {len(candidate)}")
    per_image = [compare_image(r, c) for r, c in zip(reference, candidate, strict=True)]
    agreement = [p["label_agreement"] for p in per_image]
    return {
        "images": len(per_image),
        "max_relative_error": max(p["max_relative_error"] for p in per_image),
        "label_agreement": {"mean": float(np.mean(agreement)), "min": min(agreement)},
        "jaccard": {stage: {"mean": float(np.mean([p["jaccard"][stage] for p in per_image])),
                            "min": min(p["jaccard"][stage] for p in per_image)} for stage in STAGES},
    }


def error_tables(units: list[tuple[str, str | None, str]], folder: Path) -> list[dict]:
    """Every reduced-precision row against the fp32 row of its backend.

    Args:
        units: (backend, precision, report label) of the rows that ran.
        folder: where the workers saved their outputs, `<folder>/<label>/<setting key>/<image>.npz`.

    Returns:
        one entry per reduced row and setting: {"backend", "reference", "setting", "images",
        "max_relative_error", "label_agreement", "jaccard"}, or {"backend", "reference": None,
        "reason"} when there is nothing to compare with.
    """
    tables = []
    for backend, precision, label in units:
        if not is_reduced(precision):
            continue
        reference = next((lab for b, p, lab in units if b == backend and is_reference(b, p)), None)
        if reference is None:
            tables.append({"backend": label, "reference": None,
                           "reason": f"no {REFERENCE} row of {backend} in this run (add {REFERENCE} to --precision)"})
            continue
        for path in sorted(p for p in (folder / label).glob("*") if p.is_dir()):
            other = folder / reference / path.name
            if other.is_dir():
                entry = {"backend": label, "reference": reference, "setting": path.name}
                try:
                    tables.append({**entry, **compare(load_outputs(other), load_outputs(path))})
                except ValueError as exc:  # a worker restarted mid-setting: images missing on one side
                    tables.append({**entry, "reason": str(exc)})
    return tables
