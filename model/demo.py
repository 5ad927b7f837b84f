"""`python -m sed_deploy.model.demo`: segment one image with PyTorch SED and write a colour overlay.

The embedded default of `make demo`: SED-B with seeded random weights (masks are meaningless
without a checkpoint, and a warning says so) on scikit-image's astronaut photograph, with a short
vocabulary of everyday classes. Everything runs offline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sed_deploy.runtime.embedding_cache import EmbeddingCache
from sed_deploy.runtime.errors import SedDeployError
from sed_deploy.runtime.fileio import atomic_write
from sed_deploy.runtime.optional import require
from sed_deploy.runtime.postprocess import label_map
from sed_deploy.runtime.preprocess import load_image, preprocess
from sed_deploy.runtime.visualize import class_shares, overlay

from .build import build_sed
from .config import CONFIGS
from .text import embed_vocabulary

DEFAULT_VOCABULARY = (
    "person", "sky", "flag", "rocket", "space suit", "building", "tree", "grass",
    "road", "car", "dog", "cat", "wall", "floor", "water",
)


def sample_image() -> np.ndarray:
    """The astronaut photograph that ships with scikit-image (NASA, public domain)."""
    data = require("skimage.data", "the demo's sample image (or pass --image)")
    return data.astronaut()


def run_demo(backbone: str, image_path: str | None, names: list[str], checkpoint: str | None,
             topk: int, cer: bool, out_dir: Path) -> Path:
    """Segment the image and write `<out_dir>/<stem>_overlay.png`; returns its path."""
    image = load_image(image_path) if image_path else sample_image()
    stem = Path(image_path).stem if image_path else "astronaut"
    model = build_sed(backbone, checkpoint=checkpoint)
    start = time.perf_counter()
    text = embed_vocabulary(model, names, cache=EmbeddingCache())
    print(f"vocabulary: {len(names)} classes encoded in {time.perf_counter() - start:.1f} s")
    batch = torch.from_numpy(preprocess(image, model.config.preprocessing))
    start = time.perf_counter()
    with torch.inference_mode():
        if cer:
            result = model.forward_cer(batch, text, topk)
            kept = result.kept[-1].numpy()
            scores = result.scores[kept].numpy()
            print("classes kept before decoder1/2/3:", [len(k) for k in result.kept])
        else:
            scores = model(batch, text).final[0].sigmoid().numpy()
            kept = np.arange(len(names))
    print(f"model: {time.perf_counter() - start:.1f} s on {torch.get_num_threads()} CPU threads")
    labels = label_map(scores, kept, image.shape[0], image.shape[1])
    path = out_dir / f"{stem}_overlay.png"
    with atomic_write(path) as f:
        overlay(image, labels, names).save(f, format="PNG")
    for class_id, share in class_shares(labels, len(names))[:5]:
        print(f"  {names[class_id]:<16} {100 * share:5.1f}%")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sed_deploy.model.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="B", choices=sorted(CONFIGS), help="model size (default B)")
    parser.add_argument("--checkpoint", help="trained SED checkpoint (.pth); random weights without one")
    parser.add_argument("--image", help="image file (default: scikit-image's astronaut)")
    parser.add_argument("--vocab", help="comma-separated class names (default: a short everyday list)")
    parser.add_argument("--topk", type=int, default=8, help="k of category early rejection (default 8)")
    parser.add_argument("--cer", action=argparse.BooleanOptionalAction, default=True,
                        help="category early rejection (default on)")
    parser.add_argument("-o", "--output", default="out/demo", help="output folder (default out/demo)")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.vocab.split(",")] if args.vocab else list(DEFAULT_VOCABULARY)
    try:
        path = run_demo(args.backbone, args.image, names, args.checkpoint, args.topk, args.cer, Path(args.output))
    except SedDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"overlay written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
