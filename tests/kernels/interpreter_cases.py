"""Runs the Triton kernel under Triton's CPU interpreter for a list of cases; prints one JSON result.

    TRITON_INTERPRET=1 python tests/kernels/interpreter_cases.py '{"seed": 1, "cases": [["fp32", 8, 17]]}'

A separate process because Triton decides between compiler and interpreter for its own standard
library (`tl.sum`, `tl.zeros`, ...) when `triton` is first imported, and in a test session torch's
dynamo has usually imported it long before a kernel test runs. Each case builds q, k, v as the model
passes them ([S,H,T,d] views of [S,T,H*d] projections), hands the kernel a NaN-filled output and
reports the relative error to the torch reference and whether every element was written.
"""

from __future__ import annotations

import json
import os
import sys

if os.environ.get("TRITON_INTERPRET") != "1":
    sys.exit("interpreter_cases.py: expected TRITON_INTERPRET=1 in the environment, got none")

import torch  # noqa: E402 - only after the environment check

from sed_deploy.kernels.reference import linear_class_attention_reference  # noqa: E402
from sed_deploy.kernels.triton_linear_attention import linear_class_attention  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
SEQS, HEADS = 3, 2


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.double(), expected.double()
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def model_layout(classes: int, head_dim: int, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    tokens = torch.randn(SEQS, classes, HEADS * head_dim, generator=generator).to(dtype)
    return tokens.reshape(SEQS, classes, HEADS, head_dim).transpose(1, 2)


def run_case(dtype_name: str, head_dim: int, classes: int, generator: torch.Generator) -> dict:
    dtype = DTYPES[dtype_name]
    q, k, v = (model_layout(classes, head_dim, dtype, generator) for _ in range(3))
    out = torch.full((SEQS, classes, HEADS, head_dim), float("nan"), dtype=dtype).transpose(1, 2)
    result = linear_class_attention(q, k, v, out=out)
    return {
        "returned_out": result is out,
        "all_written": bool(torch.isfinite(out).all()),
        "error": relative_error(out, linear_class_attention_reference(q, k, v)),
    }


def run_default_output(generator: torch.Generator) -> dict:
    q, k, v = (torch.randn(2, 4, 33, 16, generator=generator) for _ in range(3))
    out = linear_class_attention(q, k, v)
    return {
        "same_layout": out.shape == q.shape and out.dtype == q.dtype and out.stride() == q.stride(),
        "error": relative_error(out, linear_class_attention_reference(q, k, v)),
    }


def main(argv: list[str]) -> int:
    request = json.loads(argv[0])
    generator = torch.Generator().manual_seed(request["seed"])
    results = {"-".join(map(str, case)): run_case(*case, generator) for case in request["cases"]}
    results["default_output"] = run_default_output(generator)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
