"""Speed-up of truncating prompts to the longest one in the batch, against the full 77 positions.

    python -m sed_deploy.benchmarks.studies.text_truncation [--backbone B] [--classes 20] [--vocab pc459]

Encodes the same prompts both ways with the same model, checks they agree (max abs difference),
and writes `benchmarks/results/text_truncation_<backbone>.json` with the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sed_deploy.core.fileio import write_json
from sed_deploy.core.machine import machine_info
from sed_deploy.export.text import encode_prompts
from sed_deploy.model import build_sed
from sed_deploy.model.text import tokenize
from sed_deploy.runtime.prompts import expand_prompts
from sed_deploy.runtime.vocabulary import vocabulary_from_arg

RESULTS = Path(__file__).resolve().parent.parent / "results"


def measure(backbone: str, names: list[str], batch_size: int) -> dict:
    model = build_sed(backbone)
    tokens = tokenize(expand_prompts(names))
    timings, outputs = {}, {}
    for truncate in (True, False):
        start = time.perf_counter()
        outputs[truncate] = encode_prompts(model, tokens, batch_size, truncate=truncate, show_progress=True)
        timings[truncate] = time.perf_counter() - start
    lengths = tokens.argmax(axis=-1) + 1
    return {
        "backbone": backbone,
        "classes": len(names),
        "prompts": int(tokens.shape[0]),
        "batch_size": batch_size,
        "prompt_length_mean": float(lengths.mean()),
        "prompt_length_max": int(lengths.max()),
        "seconds_truncated": round(timings[True], 3),
        "seconds_77_tokens": round(timings[False], 3),
        "speedup": round(timings[False] / timings[True], 2),
        "max_abs_diff": float(abs(outputs[True] - outputs[False]).max()),
        "torch_threads": torch.get_num_threads(),
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="B")
    parser.add_argument("--vocab", help="a vocabulary: a known name (pc459, ...) or a file (default: 'class 0', ...)")
    parser.add_argument("--classes", type=int, default=20, help="first N names of the vocabulary")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    names = vocabulary_from_arg(args.vocab) if args.vocab else [f"class {i}" for i in range(args.classes)]
    result = measure(args.backbone, names[: args.classes], args.batch_size)
    path = RESULTS / f"text_truncation_{args.backbone}.json"
    write_json(path, result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    print(f"written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
