"""`sed-segment`: segment images with exported SED artifacts; label maps, overlays and JSON per image."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .cli import add_common_args, add_pipeline_args, pipeline_options, run
from .errors import ImageError, SedDeployError
from .fileio import atomic_write
from .pipeline import Pipeline
from .preprocess import load_image
from .progress import Steps
from .remote import RemotePipeline
from .visualize import overlay
from .vocabulary import duplicates, vocabulary_from_arg

EPILOG = """\
examples:
  sed-segment --artifacts artifacts/B --vocab ade150 street.jpg -o out/
  sed-segment --artifacts artifacts/B --vocab "person,car,road,sky,tree, forest" a.jpg b.png -o out/
  sed-segment --artifacts artifacts/B --vocab classes.txt --backend ort --no-cer photos/*.jpg -o out/
  sed-segment --server http://127.0.0.1:8000 --vocab ade150 street.jpg -o out/     # a sed-serve server segments

--vocab is a file (JSON list, or one name per line), a known name (pc459, ade150, ... looked up in
$SED_DEPLOY_VOCAB_DIR, ./vocab, ../shared/data/vocab), or an inline list separated by commas; a
comma followed by a space separates synonyms of one class ("tree, forest").

For each image IMG it writes, in the output folder:
  IMG_labels.png   class index per pixel (8-bit, or 16-bit with more than 256 classes)
  IMG_overlay.png  the image tinted by class, with a legend of the classes present
  IMG.json         classes present with pixel shares, classes kept per stage, timings
Images that cannot be read are reported one line each and skipped; the exit code is then 1.
"""


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def label_png(labels: np.ndarray, num_classes: int) -> Image.Image:
    """8-bit for up to 256 classes, else 16-bit."""
    return Image.fromarray(labels.astype(np.uint8 if num_classes <= 256 else np.uint16))


def output_stems(images: list[Path]) -> list[str]:
    """File stems for the outputs, made unique when two inputs share a name."""
    stems, seen = [], {}
    for path in images:
        stem = path.stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return stems


def segment_images(args: argparse.Namespace) -> int:
    """Run the pipeline over the images; returns the number of images that failed."""
    names = vocabulary_from_arg(args.vocab)
    if dups := duplicates(names):
        print(f"WARNING: duplicate class names {dups[:5]}: their pixels go to the first occurrence", file=sys.stderr)
    if args.server:  # a sed-serve server segments; the outputs are written here as below
        pipeline = RemotePipeline.for_cli(args)
    else:
        pipeline = Pipeline.from_artifacts(args.artifacts, **pipeline_options(args))
        if pipeline.manifest.weights.get("weights") == "random":
            print("WARNING: these artifacts have RANDOM weights: the masks are meaningless "
                  "(export with --checkpoint for real ones)", file=sys.stderr)
    pipeline.set_vocabulary(names, show_progress=not args.quiet)
    if pipeline.name_changes:
        print(f"normalised {len(pipeline.name_changes)} class name(s): "
              + "; ".join(str(c) for c in pipeline.name_changes[:5]), file=sys.stderr)
    names = pipeline.names
    out = Path(args.output)
    failed = 0
    steps = Steps(len(args.images), "segment", enabled=not args.quiet)
    try:
        for path, stem in zip(args.images, output_stems(args.images), strict=True):
            steps.label(path.name)
            try:
                rgb = load_image(path)
                result = pipeline(rgb)
            except ImageError as exc:
                steps.write(f"skipped: {exc}")
                failed += 1
                steps.advance()
                continue
            summary = {"image": str(path), "backend": pipeline.backend, "topk": pipeline.topk if args.cer else None,
                       "vocabulary_size": len(names), **result.summary()}
            files = {
                f"{stem}_labels.png": encode_png(label_png(result.labels, len(names))),
                f"{stem}_overlay.png": encode_png(overlay(rgb, result.labels, names)),
                f"{stem}.json": (json.dumps(summary, indent=2, ensure_ascii=False) + "\n").encode(),
            }
            for name, data in files.items():
                with atomic_write(out / name) as f:
                    f.write(data)
            top = ", ".join(f"{names[c].strip()} {100 * s:.0f}%" for c, s in result.shares()[:3])
            overlay_path = out / f"{stem}_overlay.png"
            steps.write(f"{path.name}: {top}  ({1000 * result.timings['total']:.0f} ms) -> {overlay_path}")
            steps.advance()
    finally:
        steps.close()
        pipeline.close()
    return failed


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sed-segment", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--artifacts", type=Path, help="folder written by sed-export")
    source.add_argument("--server", metavar="URL",
                        help="a sed-serve server (e.g. http://127.0.0.1:8000) segments instead; same outputs")
    parser.add_argument("--vocab", required=True, help="class names: a file, a known name, or an inline list")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    add_pipeline_args(parser)
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    outcome = {"failed": 0}

    def job():
        outcome["failed"] = segment_images(args)
        if outcome["failed"]:
            raise SedDeployError(f"{outcome['failed']} of {len(args.images)} image(s) could not be read")

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
