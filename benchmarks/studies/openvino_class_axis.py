"""OpenVINO's class axis: one dynamic compiled model per decoder, or one compiled model per class count.

    python -m sed_deploy.benchmarks.studies.openvino_class_axis --artifacts artifacts/tiny \
        [--classes 459] [--topk 1] [--images 40] [--cache 8] [--threads 1]

Runs the same pipeline (category early rejection on, a vocabulary of `--classes` random unit
embeddings, `--images` random pictures) on the openvino backend twice: decoders compiled once with
dynamic class axes, then compiled per input shape with an LRU cache of `--cache` entries
(`OpenvinoBackend.static_shapes`). The class counts each image leaves alive are the real CER
sequence of these graphs; every decoder time includes the compiles it triggered. Checks that both
give the same labels, and writes `benchmarks/results/openvino_class_axis_<backbone>.json`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.fileio import write_json
from sed_deploy.core.machine import machine_info
from sed_deploy.core.manifest import Manifest
from sed_deploy.runtime.backends.openvino import OpenvinoBackend
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.pipeline import Pipeline

RESULTS = Path(__file__).resolve().parent.parent / "results"


def _pipeline(folder: Path, cache: int, topk: int, threads: int | None) -> Pipeline:
    manifest = Manifest.load(folder)
    kind = type("OpenvinoStatic", (OpenvinoBackend,), {"static_shapes": cache}) if cache else OpenvinoBackend
    stages = kind.for_artifacts(manifest, folder, BackendOptions(threads=threads))
    return Pipeline(manifest, folder, stages, "openvino", topk=topk, cer=True).load()


def run_mode(folder: Path, cache: int, text: np.ndarray, images: list[np.ndarray], topk: int,
             threads: int | None) -> dict:
    pipeline = _pipeline(folder, cache, topk, threads)
    pipeline.set_vocabulary([f"class {i}" for i in range(len(text))], embeddings=text)
    decoder_ms, total_ms, counts, labels = [], [], [], []
    for image in images:
        start = time.perf_counter()
        result = pipeline(image)
        total_ms.append((time.perf_counter() - start) * 1e3)
        decoder_ms.append(sum(result.timings[s] for s in DECODERS) * 1e3)
        counts.append([len(k) for k in result.kept])
        labels.append(result.labels)
    compiles = {s: pipeline.backends[s].compiles for s in DECODERS}
    compile_ms = sum(pipeline.backends[s].compile_seconds for s in DECODERS) * 1e3
    pipeline.close()
    return {"cache": cache, "decoder_ms": _summary(decoder_ms), "end_to_end_ms": _summary(total_ms),
            "decoders_total_ms": round(sum(decoder_ms), 1), "compiles": compiles,
            "compile_ms_total": round(compile_ms, 1), "class_counts": counts, "_labels": labels}


def _summary(values: list[float]) -> dict:
    return {"median": round(float(np.median(values)), 2), "mean": round(float(np.mean(values)), 2),
            "max": round(float(np.max(values)), 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, required=True)
    parser.add_argument("--classes", type=int, default=459)
    parser.add_argument("--topk", type=int, default=1)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--cache", type=int, default=8)
    parser.add_argument("--threads", type=int)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args(argv)
    manifest = Manifest.load(args.artifacts)
    rng = np.random.default_rng(0)
    text = rng.standard_normal((args.classes, manifest.num_templates, manifest.embed_dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=-1, keepdims=True)
    size = manifest.config["image_size"]
    images = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(args.images)]
    modes = [run_mode(args.artifacts, cache, text, images, args.topk, args.threads) for cache in (0, args.cache)]
    dynamic, static = modes
    assert dynamic["class_counts"] == static["class_counts"], "the two modes kept different classes"
    agree = float(np.mean([np.mean(a == b) for a, b in zip(dynamic.pop("_labels"), static.pop("_labels"),
                                                             strict=True)]))
    distinct = len({tuple(c) for c in dynamic["class_counts"]})
    faster = "dynamic" if dynamic["decoders_total_ms"] <= static["decoders_total_ms"] else "static"
    report = {
        "study": "openvino_class_axis", "backbone": manifest.backbone, "artifacts": str(args.artifacts),
        "classes": args.classes, "topk": args.topk, "images": args.images, "threads": args.threads,
        "distinct_count_sequences": distinct, "label_agreement": agree, "dynamic": dynamic, "static": static,
        "faster": faster,
        "static_over_dynamic_decoders": round(static["decoders_total_ms"] / dynamic["decoders_total_ms"], 3),
        "machine": machine_info(),
    }
    out = args.output or RESULTS / f"openvino_class_axis_{manifest.backbone}.json"
    write_json(out, report)
    print(f"decoders over {args.images} images: dynamic {dynamic['decoders_total_ms']:.0f} ms, static (LRU "
          f"{args.cache}) {static['decoders_total_ms']:.0f} ms with {sum(static['compiles'].values())} compiles; "
          f"{distinct} distinct count sequences; faster: {faster}; written {out}")


if __name__ == "__main__":
    main()
