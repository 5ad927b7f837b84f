"""Triton class-attention kernel vs the torch reference vs the memory-bandwidth floor, on a GPU.

    python -m sed_deploy.benchmarks.studies.kernel_linear_attention [--classes 459] [--dtype fp32 fp16]
        [--peak-gbs 3350] [--json benchmarks/results/kernel_linear_attention_H100.json]

For each decoder stage's attention shape (B backbone at 768x768: decoder1 S=576 C=128, decoder2
S=2304 C=64, decoder3 S=9216 C=32; 4 heads) it builds q, k, v as the model passes them ([S,H,T,d]
views of [S,T,C] projections), checks the kernel against the reference, and times both with
`triton.testing.do_bench` (median of repeated runs, L2 flushed between runs). The floor is the
bytes the kernel must move (read q, k, v once, write the output once; kernels/README.md) divided by
the bandwidth of a large device-to-device copy measured the same way, and by --peak-gbs if given.
Without a CUDA GPU it prints one line and exits 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from sed_deploy.core.contract import DECODERS
from sed_deploy.core.fileio import write_json
from sed_deploy.core.machine import machine_info
from sed_deploy.core.optional import available
from sed_deploy.kernels.reference import linear_class_attention_reference

STAGES = tuple(zip(DECODERS, (576, 2304, 9216), (128, 64, 32), strict=True))
HEADS = 4
DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
COPY_BYTES = 1 << 30


def bytes_moved(seqs: int, dim: int, classes: int, itemsize: int) -> int:
    """The kernel's minimum traffic: q, k, v read once and the output written once, [S,T,C] each."""
    return 4 * seqs * classes * dim * itemsize


def model_layout_inputs(seqs: int, dim: int, classes: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """q, k, v on the GPU as [S,H,T,d] views of [S,T,C] tensors, like `LinearAttentionLayer`."""
    head_dim = dim // HEADS
    views = []
    for _ in range(3):
        tokens = torch.randn(seqs, classes, dim, device="cuda", dtype=dtype)
        views.append(tokens.reshape(seqs, classes, HEADS, head_dim).transpose(1, 2))
    return views


def copy_bandwidth(do_bench) -> float:
    """Achievable device memory bandwidth in bytes/s: a 1 GiB copy counts 2 GiB (read + write)."""
    source = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    milliseconds = do_bench(lambda: target.copy_(source), warmup=25, rep=100, return_mode="median")
    return 2 * COPY_BYTES / (milliseconds * 1e-3)


def measure(stage: str, seqs: int, dim: int, classes: int, dtype_name: str, do_bench, copy_bw: float) -> dict:
    from sed_deploy.kernels.triton_linear_attention import linear_class_attention

    dtype = DTYPES[dtype_name]
    q, k, v = model_layout_inputs(seqs, dim, classes, dtype)
    kernel_out, reference_out = linear_class_attention(q, k, v), linear_class_attention_reference(q, k, v)
    error = ((kernel_out.double() - reference_out.double()).abs().max() / reference_out.double().abs().max()).item()
    kernel_ms = do_bench(lambda: linear_class_attention(q, k, v), warmup=25, rep=100, return_mode="median")
    reference_ms = do_bench(lambda: linear_class_attention_reference(q, k, v), warmup=25, rep=100, return_mode="median")
    moved = bytes_moved(seqs, dim, classes, dtype.itemsize)
    return {
        "stage": stage,
        "S": seqs,
        "C": dim,
        "H": HEADS,
        "d": dim // HEADS,
        "T": classes,
        "dtype": dtype_name,
        "megabytes": moved / 1e6,
        "floor_us": moved / copy_bw * 1e6,
        "kernel_us": kernel_ms * 1e3,
        "reference_us": reference_ms * 1e3,
        "relative_error": error,
    }


def table(rows: list[dict], peak_gbs: float | None) -> str:
    header = "| stage | S | d | T | dtype | MB moved | floor us | kernel us | floor / kernel | reference us | error |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['stage']} | {r['S']} | {r['d']} | {r['T']} | {r['dtype']} | {r['megabytes']:.1f} | "
            f"{r['floor_us']:.1f} | {r['kernel_us']:.1f} | {100 * r['floor_us'] / r['kernel_us']:.0f}% | "
            f"{r['reference_us']:.1f} | {r['relative_error']:.1e} |"
        )
    if peak_gbs:
        lines.append("")
        for r in rows:
            lines.append(
                f"{r['stage']} {r['dtype']}: floor at {peak_gbs:g} GB/s = {1e3 * r['megabytes'] / peak_gbs:.1f} us"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, default=459, help="T, the classes alive at the stage")
    parser.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32", "fp16"])
    parser.add_argument("--peak-gbs", type=float, help="the GPU's rated memory bandwidth, GB/s, for a second floor")
    parser.add_argument("--json", type=Path, help="also write the rows and the machine to this file")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "kernel_linear_attention: needs a CUDA GPU (torch.cuda.is_available() is False); nothing timed",
            file=sys.stderr,
        )
        return 1
    if not available("triton"):
        print(
            "kernel_linear_attention: needs triton: pip install 'sed-deploy[kernels]'; nothing timed", file=sys.stderr
        )
        return 1
    from triton.testing import do_bench

    copy_bw = copy_bandwidth(do_bench)
    rows = [
        measure(stage, seqs, dim, args.classes, dtype_name, do_bench, copy_bw)
        for stage, seqs, dim in STAGES
        for dtype_name in args.dtype
    ]
    print(f"{torch.cuda.get_device_name()}: device-to-device copy {copy_bw / 1e9:.0f} GB/s")
    print(table(rows, args.peak_gbs))
    if args.json:
        device = {"name": torch.cuda.get_device_name(), "copy_gbs": copy_bw / 1e9, "peak_gbs": args.peak_gbs}
        write_json(args.json, {"rows": rows, "device": device, "machine": machine_info()})
        print(f"written to {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
