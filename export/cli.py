"""`sed-export`: build SED, export every stage to ONNX, check and validate it, write the manifest."""

from __future__ import annotations

import argparse
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, add_common_args, run
from sed_deploy.core.contract import MAX_TOPK
from sed_deploy.model.config import CONFIGS, POOLINGS

from .artifacts import (
    DEFAULT_CALIB_COUNT,
    DEFAULT_CALIB_VOCAB,
    EXPORT_PRECISIONS,
    INT8_TOLERANCE,
    SUPPORTED_OPSETS,
    ExportOptions,
    current_manifest,
    export_artifacts,
)

EPILOG = """\
examples:
  sed-export --backbone tiny -o artifacts/tiny                       # seconds; for tests
  sed-export --backbone B -o artifacts/B                             # random weights (warned)
  sed-export --backbone B --checkpoint model_final.pth --vocab pc459 -o artifacts/B
  sed-export --backbone B --precision fp16 -o artifacts/B            # + fp16 graphs for TensorRT / Jetson
  sed-export --backbone B --checkpoint model_final.pth --precision int8 --calib-images my_images/ -o artifacts/B
                                                                     # + int8 Q/DQ graphs calibrated on your images

Writes <name>.onnx for image_encoder, text_encoder, cost, decoder1, decoder2, decoder3 (and
<name>.fp16.onnx of the image stages with --precision fp16, <name>.int8.onnx of the stages where int8
pays with --precision int8), the tokenizer files, text embeddings of
--vocab under text/, and manifest.json (written last).
Every graph passes the ONNX checker and a TensorRT-compatibility lint and is validated against
PyTorch with ONNX Runtime (relative error under 1e-4) before it is kept.
"""


def parse_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class counts like 2,17, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"class counts must be at least 1, got {text!r}")
    return counts


def parse_precisions(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in values if v not in EXPORT_PRECISIONS]
    if unknown or not values:
        raise argparse.ArgumentTypeError(f"expected precisions among {', '.join(EXPORT_PRECISIONS)}, got {text!r}")
    return ("fp32", *sorted(set(values) - {"fp32"}))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="sed-export", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backbone", required=True, choices=sorted(CONFIGS), help="model size")
    parser.add_argument("--checkpoint", type=Path, help="trained SED checkpoint (.pth); random weights without one")
    parser.add_argument("--vocab", help="vocabulary to embed: a name (pc459, ade150, ...) or a file of class names")
    parser.add_argument("--opset", type=int, default=17, choices=SUPPORTED_OPSETS, metavar="N",
                        help=f"ONNX opset, {SUPPORTED_OPSETS[0]} to {SUPPORTED_OPSETS[-1]} (default 17: TensorRT "
                             "10.3 / JetPack 6); every graph is checked to have it")
    parser.add_argument("--pooling", choices=[f"{p}x{p}" for p in POOLINGS], default="1x1",
                        help="class-attention pooling of the decoders: 1x1 (default; the published evaluation "
                             "protocol, the official eval.sh) or 2x2 (the official training config and demo); "
                             "recorded in the manifest")
    parser.add_argument("--topk", type=int, default=16,
                        help="K of the top-k outputs: the largest k the runtime can use (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    parser.add_argument("--attention", choices=["reference", "plugin"], default="reference",
                        help="class attention in the decoder graphs: standard ONNX ops (default), or one "
                             "sed::linear_class_attention node per layer for TensorRT's Triton plugin "
                             "(validated here through onnxruntime-extensions)")
    parser.add_argument("--precision", type=parse_precisions, default=("fp32",), metavar="P[,P]",
                        help="graph precisions to write: fp32 (always) and fp16 (float16 variants of the image "
                             "stages, each checked against fp32 in ONNX Runtime; a stage that misses the tolerance "
                             "stays fp32). TensorRT builds fp16 engines from them, so the target needs no onnx; "
                             "int8 (symmetric Q/DQ graphs of image_encoder, cost and decoder1, calibrated on "
                             "--calib-images and checked against fp32 on them; the same files run on ONNX "
                             "Runtime, OpenVINO and TensorRT)")
    parser.add_argument("--calib-images", type=Path, metavar="DIR",
                        help="int8: folder of calibration images, typical of your use (the first --calib-count "
                             "by name); the fp32 pipeline runs on them to record each stage's inputs")
    parser.add_argument("--calib-count", type=int, default=DEFAULT_CALIB_COUNT, metavar="N",
                        help=f"int8: how many calibration images to use (default {DEFAULT_CALIB_COUNT})")
    parser.add_argument("--calib-vocab", default=DEFAULT_CALIB_VOCAB, metavar="V",
                        help=f"int8: vocabulary of the calibration runs, a name or a file of class names "
                             f"(default {DEFAULT_CALIB_VOCAB}); it is embedded in the artifacts too")
    parser.add_argument("--int8-tolerance", type=float, default=INT8_TOLERANCE, metavar="R",
                        help=f"int8: a stage whose graph is off its fp32 graph by more than this relative error "
                             f"(max |int8 - fp32| / max |fp32| on the calibration images) stays fp32 "
                             f"(default {INT8_TOLERANCE})")
    parser.add_argument("--validate-counts", type=parse_counts, metavar="N,N,...",
                        help="class counts to validate at (default: 1,2,17,150 for tiny, 2,17 for B and L)")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the output folder as it is if its manifest already matches this export")
    parser.add_argument("-o", "--output", type=Path, required=True, help="artifacts folder")
    add_common_args(parser)
    args = parser.parse_args(argv)
    if not 1 <= args.topk <= MAX_TOPK:
        parser.error(f"--topk must be between 1 and {MAX_TOPK}, got {args.topk}")
    if args.checkpoint is not None and not str(args.checkpoint):
        parser.error("--checkpoint is empty")
    options = ExportOptions(
        backbone=args.backbone, output=args.output, checkpoint=args.checkpoint, vocab=args.vocab,
        opset=args.opset, topk=args.topk, seed=args.seed, class_counts=args.validate_counts, quiet=args.quiet,
        attention=args.attention, precisions=args.precision, pooling=int(args.pooling.split("x")[0]),
        calib_images=args.calib_images, calib_count=args.calib_count, calib_vocab=args.calib_vocab,
        int8_tolerance=args.int8_tolerance,
    )

    def job():
        if args.reuse and current_manifest(options) is not None:
            print(f"{args.output} is up to date (its manifest matches this export): reused")
            return
        manifest = export_artifacts(options)
        print(f"SED-{manifest.backbone} exported to {args.output} ({len(manifest.stages)} stages, manifest.json)")

    return run(job, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
