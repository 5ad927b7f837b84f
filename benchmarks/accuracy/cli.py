"""`sed-eval`: mIoU of SED on a labelled folder, with the runtime and backend you deploy; dataset converters."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from sed_deploy.core.cli import ArgumentParser, add_common_args, run
from sed_deploy.core.errors import SedDeployError
from sed_deploy.runtime.backends.options import PRECISIONS
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.pipeline_args import add_pipeline_args, pipeline_settings
from sed_deploy.runtime.vocabulary import vocabulary_from_arg

from .converters import TABLES, convert_folder, table_from_json
from .dataset import check_ignore_index, choose_subset, pair_samples
from .precisions import precision_info
from .report import write_report
from .run import Variant, evaluate, nothing_to_evaluate, vocabulary_predictor
from .vocab_noise import KINDS, LEVELS, noise_variants

EPILOG = """\
examples:
  sed-eval --artifacts artifacts/B --images camvid/images --labels camvid/labels \\
           --vocab camvid/labels/vocabulary.txt -o reports/camvid
  sed-eval ... --limit 50 --seed 1 --no-cer -o reports/camvid_nocer
  sed-eval ... --vocab-noise typos emoji --noise-level heavy -o reports/camvid_noise
  sed-eval ... --compare-precision int8 -o reports/camvid_int8   # fp32 and int8 mIoU, per class
  sed-eval convert camvid --rgb-labels CamVid/LabeledApproved_full -o camvid/labels
  sed-eval convert --table my_colours.json --rgb-labels painted/ -o labels/

Labels are single-channel PNGs (8- or 16-bit) of class indices into --vocab, paired with the images
by file stem; --ignore-index pixels are left out of every count. Missing pairs, unreadable files,
size mismatches and indices outside the vocabulary are reported one line each and skipped.

The report folder gets report.json, report.md (per-class table sorted by IoU, the cost of category
early rejection per class, the noise study), confusion.npy, confusion.png (the most confused
classes) and best_*/worst_* panels (image | ground truth | prediction).
"""

CONVERT_EPILOG = """\
A colour table in JSON (--table) looks like the colours.json this command writes:
  {"classes": [{"name": "road", "colour": [128, 64, 128]}, {"name": "sky", "colour": "#808080"}],
   "ignore": [[0, 0, 0]], "label_suffix": "_L"}
Class ids are the positions in "classes"; "ignore" colours (unlabelled) become --ignore-index.
"""


def precision_list(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values or any(v not in PRECISIONS for v in values):
        raise argparse.ArgumentTypeError(f"expected precisions among {', '.join(PRECISIONS)}, got {text!r}")
    return values


def run_evaluation(args: argparse.Namespace) -> dict:
    """Evaluate the folder and write the report; returns report.json's content."""
    ignore_index = check_ignore_index(args.ignore_index)
    names = vocabulary_from_arg(args.vocab)
    samples, problems = pair_samples(args.images, args.labels, args.label_suffix)
    for problem in problems:
        print(problem)
    pairs = len(samples)
    if not samples:  # before loading the model
        raise nothing_to_evaluate(0, problems)
    samples = choose_subset(samples, args.limit, args.seed)
    settings = pipeline_settings(args)
    pipeline = Pipeline.from_artifacts(args.artifacts, **settings.kwargs())
    others: list[Pipeline] = []  # the pipelines of --compare-precision
    try:
        weights = pipeline.manifest.weights.get("weights")
        if weights == "random":
            print("WARNING: these artifacts have RANDOM weights: the metrics are meaningless "
                  "(export with --checkpoint for real ones)", file=sys.stderr)
        pipeline.set_vocabulary(names, show_progress=not args.quiet, normalize=args.normalize)
        for change in pipeline.name_changes:
            print(f"class name normalised: {change}", file=sys.stderr)
        clean_names, clean_text = list(pipeline.names), pipeline.text
        variants = noise_variants(pipeline, args.vocab_noise, args.noise_level, args.seed,
                                  show_progress=not args.quiet) if args.vocab_noise else []
        for precision in args.compare_precision or ():
            options = replace(settings.options, precision=precision)
            other = Pipeline.from_artifacts(args.artifacts, **{**settings.kwargs(), "options": options})
            others.append(other)
            variants.append(Variant(precision, clean_names, vocabulary_predictor(other, clean_names, clean_text),
                                    info=precision_info(precision)))
        evaluation = evaluate(samples, vocabulary_predictor(pipeline, clean_names, clean_text), clean_names,
                              ignore_index, variants, args.panels, problems, show_progress=not args.quiet,
                              max_pixels=args.max_pixels)
        config = {
            "artifacts": str(args.artifacts), "backbone": pipeline.manifest.backbone, "weights": weights,
            "backend": pipeline.backend, "precision": args.precision, "cer": args.cer,
            "topk": pipeline.topk if args.cer else None,
            "images": str(args.images), "labels": str(args.labels), "vocabulary": args.vocab,
            "classes": len(clean_names), "ignore_index": ignore_index, "pairs_found": pairs,
            "limit": args.limit, "seed": args.seed if args.limit or args.vocab_noise else None,
            "normalised_names": len(pipeline.name_changes), "compare_precision": args.compare_precision,
        }
    finally:
        for other in others:
            other.close()
        pipeline.close()
    report = write_report(evaluation, config, args.output, figures=not args.no_figures)
    _print_summary(report, Path(args.output))
    return report


def _print_summary(report: dict, out: Path) -> None:
    m, d = report["metrics"], report["dataset"]
    skipped = sum(d["problems"].values())
    print(f"{d['evaluated']} image(s) evaluated, {skipped} problem(s): mIoU {100 * (m['miou'] or 0):.2f}  "
          f"fwIoU {100 * (m['fwiou'] or 0):.2f}  pixel acc {100 * (m['pixel_accuracy'] or 0):.2f}  "
          f"mean acc {100 * (m['mean_accuracy'] or 0):.2f}  ({m['classes_present']} classes present)")
    for row in (report.get("precisions") or {}).get("runs", []):
        print(f"  {row['precision']}: mIoU {100 * (row['miou'] or 0):.2f} ({100 * (row['miou_change'] or 0):+.2f} "
              f"points), {100 * (row['label_agreement'] or 0):.1f}% of pixels labelled as "
              f"{report['precisions']['reference']}")
    for row in report["vocab_noise"]:
        print(f"  {row['label']}: cosine {row['cosine_mean']:.4f}, agreement {100 * row['label_agreement']:.1f}%, "
              f"mIoU {100 * row['miou']:.2f}")
    print(f"report: {out / 'report.md'}")


def run_conversion(args: argparse.Namespace) -> None:
    if (args.dataset is None) == (args.table is None):
        raise SedDeployError("give a dataset name (camvid) or --table FILE, one of the two")
    table = TABLES[args.dataset] if args.dataset else table_from_json(args.table)
    result = convert_folder(table, args.rgb_labels, args.output, args.ignore_index, args.label_suffix)
    print(f"{result.converted} label map(s) written to {args.output}; {len(result.problems)} problem(s), "
          f"{result.unknown_pixels} pixel(s) of unknown colours set to {args.ignore_index}; "
          f"vocabulary of {len(table.names)} classes: {result.vocabulary}")


def convert_main(argv: list[str]) -> int:
    parser = ArgumentParser(prog="sed-eval convert", epilog=CONVERT_EPILOG,
                                     description="Colour-coded label images -> index PNGs and a vocabulary file.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=sorted(TABLES), help="a built-in colour table")
    parser.add_argument("--table", type=Path, help="a colour table in JSON, instead of a built-in one")
    parser.add_argument("--rgb-labels", required=True, type=Path, help="folder of colour-coded label images")
    parser.add_argument("-o", "--output", required=True, type=Path, help="folder for the index PNGs")
    parser.add_argument("--ignore-index", type=int, default=255, help="value of unlabelled pixels (default 255)")
    parser.add_argument("--label-suffix", help="stem ending removed from label names (default: the table's, "
                        "CamVid: _L)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    return run(lambda: run_conversion(args), debug=args.debug)


def build_parser() -> argparse.ArgumentParser:
    description = (f"{__doc__}\n\nconverters: sed-eval convert {{camvid | --table FILE}} --rgb-labels DIR -o DIR "
                   "(sed-eval convert --help)")
    parser = ArgumentParser(prog="sed-eval", description=description, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("dataset")
    data.add_argument("--images", required=True, type=Path, help="folder of images")
    data.add_argument("--labels", required=True, type=Path, help="folder of label PNGs (class indices)")
    data.add_argument("--vocab", required=True, help="class names: a file, a known name, or an inline list")
    data.add_argument("--ignore-index", type=int, default=255, help="label value left out (default 255)")
    data.add_argument("--label-suffix", default="", help="stem ending of label files their images lack")
    data.add_argument("--limit", type=int, help="evaluate a random subset of N pairs")
    data.add_argument("--seed", type=int, default=0, help="seed of --limit and --vocab-noise (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--artifacts", required=True, type=Path, help="folder written by sed-export")
    add_pipeline_args(parser)
    model.add_argument("--compare-precision", type=precision_list, metavar="P[,P]",
                       help=f"also run these precisions ({', '.join(PRECISIONS)}) on the same images and report "
                            "mIoU and per-class IoU side by side with --precision's (e.g. int8 against fp32)")
    names = parser.add_argument_group("class names")
    names.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                       help="repair the class names before encoding them (default on)")
    names.add_argument("--vocab-noise", nargs="+", choices=KINDS, metavar="KIND",
                       help=f"also evaluate the vocabulary perturbed by these kinds of noise ({', '.join(KINDS)})")
    names.add_argument("--noise-level", choices=LEVELS, default="light")
    out = parser.add_argument_group("report")
    out.add_argument("-o", "--output", required=True, type=Path, help="report folder")
    out.add_argument("--panels", type=int, default=3, help="best and worst images drawn (default 3 each)")
    out.add_argument("--no-figures", action="store_true", help="no PNGs")
    add_common_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["convert"]:
        return convert_main(argv[1:])
    args = build_parser().parse_args(argv)
    return run(lambda: run_evaluation(args), debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
