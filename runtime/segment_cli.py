"""`sed-segment`: segment images with exported SED artifacts; label maps, overlays and JSON per image."""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sed_deploy.core.cli import ArgumentParser, add_common_args, run
from sed_deploy.core.errors import ImageError, MissingDependencyError, SedDeployError, first_line
from sed_deploy.core.progress import Steps

from .decode import EncodedImage, read_image_file
from .outputs import OutputFolder, check_output_folder, encode_png, source_id
from .pipeline import Pipeline
from .pipeline_args import add_pipeline_args, pipeline_settings
from .segmentation import Segmentation
from .visualize import overlay
from .vocabulary import near_known_name, vocabulary_from_arg

EPILOG = """\
examples:
  sed-segment --artifacts artifacts/B --vocab ade150 street.jpg -o out/
  sed-segment --artifacts artifacts/B --vocab "person,car,road,sky,tree, forest" a.jpg b.png -o out/
  sed-segment --artifacts artifacts/B --vocab classes.txt --backend ort --no-cer photos/*.jpg -o out/
  sed-segment --server http://127.0.0.1:8000 --vocab ade150 street.jpg -o out/     # a sed-serve server segments

--vocab is, in this order: an existing file (JSON list, or one name per line); a known name
(ade150, ade847, pc59, pc459, voc20, voc20b, coco: shipped with sed-deploy; more as <name>.json in
$SED_DEPLOY_VOCAB_DIR or ./vocab); else class names separated by commas (a comma followed by a space
separates synonyms of one class: "tree, forest"), so --vocab sky is one class.

For each image IMG it writes, in the output folder:
  IMG_labels.png   class index per pixel (8-bit, or 16-bit with more than 256 classes)
  IMG_overlay.png  the image tinted by class, with a legend of the classes present
  IMG.json         classes present with pixel shares, classes kept per stage, timings, the input
                   and the names of the three files
IMG is the image's stem; inputs sharing a stem get their extension too (a_jpg, a_png), and a name
taken by a file sed-segment did not write for this input gets _2, _3, ... Nothing is overwritten
except results sed-segment wrote for the same input; each image's three files appear together or
not at all (written aside, then renamed, the JSON last). Images that cannot be read or are larger
than --max-pixels are reported one line each and skipped; the exit code is then 1.
"""

# the server client registers itself here (see pyproject.toml): sed-segment never imports the serve layer
REMOTE_GROUP, REMOTE_NAME = "sed_deploy.remote", "sed-serve"


class Segmenter(Protocol):
    """What sed-segment needs of a local `Pipeline` or of the server client (`serve.client.RemotePipeline`)."""

    names: list[str] | None
    name_changes: list
    weights: str

    def set_vocabulary(self, names: list[str], show_progress: bool = True) -> None: ...
    def __call__(self, image: EncodedImage) -> Segmentation: ...
    def close(self) -> None: ...


def label_png(labels: np.ndarray, num_classes: int) -> Image.Image:
    """8-bit for up to 256 classes, else 16-bit."""
    return Image.fromarray(labels.astype(np.uint8 if num_classes <= 256 else np.uint16))


def result_pngs(rgb: np.ndarray, result: Segmentation, source: str) -> dict[str, bytes]:
    """The label map and the overlay of one image as PNG bytes, marked with the input they belong to."""
    ident = source_id(source)
    return {"labels": encode_png(label_png(result.labels, len(result.names)), ident),
            "overlay": encode_png(overlay(rgb, result.labels, result.names), ident)}


def segment_images(args: argparse.Namespace) -> list[str]:
    """Run the pipeline over the images; returns one line per image that could not be segmented."""
    names = vocabulary_from_arg(args.vocab)
    if len(names) == 1 and (near := near_known_name(args.vocab)):
        print(f"WARNING: --vocab {args.vocab!r} is used as one class name; did you mean the vocabulary {near}?",
              file=sys.stderr)
    check_output_folder(args.output)  # a file in the way fails before the model loads
    settings = pipeline_settings(args)
    if args.server:  # a sed-serve server segments; the outputs are written here as below
        pipeline = remote_pipeline_class().connect(args.server, settings=settings)
    else:
        pipeline = Pipeline.from_artifacts(args.artifacts, **settings.kwargs())
    try:
        with OutputFolder(args.output, args.images) as out:
            return _segment_all(args, pipeline, names, out)
    finally:
        pipeline.close()


def remote_pipeline_class() -> Any:
    """The server client registered in the `sed_deploy.remote` entry-point group (the serve layer's)."""
    found = [e for e in importlib.metadata.entry_points(group=REMOTE_GROUP) if e.name == REMOTE_NAME]
    try:
        return found[0].load()
    except (IndexError, ImportError) as exc:
        why = f" ({first_line(exc)})" if not isinstance(exc, IndexError) else ""
        raise MissingDependencyError(f"sed-segment --server needs the sed-serve client{why}; install it with: "
                                     "pip install 'sed-deploy[client]'") from None


def _segment_all(args: argparse.Namespace, pipeline: Segmenter, names: list[str], out: OutputFolder) -> list[str]:
    warned = _warn_random(pipeline, False)
    pipeline.set_vocabulary(names, show_progress=not args.quiet)
    if pipeline.name_changes:
        print(f"WARNING: normalised {len(pipeline.name_changes)} class name(s): "
              + "; ".join(str(c) for c in pipeline.name_changes[:5]), file=sys.stderr)
    failures = []
    steps = Steps(len(args.images), "segment", enabled=not args.quiet)
    try:
        for path, base in zip(args.images, out.bases, strict=True):
            steps.label(path.name)
            try:
                image = read_image_file(path, args.max_pixels)  # read and decoded once, here
                result = pipeline(image)
            except ImageError as exc:
                steps.write(f"skipped: {exc}")
                failures.append(str(exc))
                steps.advance()
                continue
            warned = _warn_random(pipeline, warned)
            summary = {"image": str(path), "backend": result.backend, "topk": result.topk,
                       "vocabulary_size": len(result.names), **result.summary()}
            written = out.write(path, base, result_pngs(image.rgb, result, str(path)), summary)
            top = ", ".join(f"{result.names[c].strip()} {100 * s:.0f}%" for c, s in result.shares()[:3])
            steps.write(f"{path.name}: {top}  ({1000 * result.timings['total']:.0f} ms) -> {written['overlay']}")
            steps.advance()
    finally:
        steps.close()
    return failures


def _warn_random(pipeline: Segmenter, warned: bool) -> bool:
    """Say once that the weights are random (known at load locally, from the first answer of a server)."""
    if not warned and pipeline.weights == "random":
        print("WARNING: the artifacts have RANDOM weights: the masks are meaningless "
              "(export with --checkpoint for real ones)", file=sys.stderr)
        return True
    return warned


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="sed-segment", description=__doc__, epilog=EPILOG,
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

    def job():
        failures = segment_images(args)
        if len(args.images) == 1 and failures:
            raise SedDeployError(failures[0])
        if failures:
            raise SedDeployError(f"{len(failures)} of {len(args.images)} image(s) could not be segmented "
                                 f"(first: {failures[0]})")

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
