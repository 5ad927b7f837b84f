"""What a GPU machine with CUDA and PyTorch but no TensorRT (a cloud notebook) can check, in one table.

    python -m sed_deploy.benchmarks.studies.gpu_without_tensorrt [--backbone tiny] [--classes 150]

- the Triton class-attention kernel on the GPU against its torch reference, at the three decoder
  shapes of SED-B, fp32 and fp16 (relative error; tolerances of tests/kernels);
- the torch backend on CUDA, end to end on the exported artifacts of --backbone (exported to a
  temporary folder), against ONNX Runtime on the CPU: the classes kept at every stage must agree
  and the scores differ by less than 1e-3 (GPU float32 with TF32 off vs CPU);
- the device-memory layer the TensorRT backend would use (cuda-python's bindings or pycuda): a
  64 MB round trip through pinned buffers (equal bytes, copy bandwidth), a session that allocates
  and frees (free memory back to where it was), and a pipeline-like session never closed in a
  subprocess (exits 0, nothing left on a context stack).

Needs the export, ort and kernels extras, plus cuda-bindings (`pip install 'cuda-bindings<14'`). About
2 minutes with the tiny backbone, under 10 with B. Exit code 1 if any check fails.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sed_deploy.core.contract import DECODERS

KERNEL_SHAPES = tuple(zip(DECODERS, (576, 2304, 9216), (128, 64, 32), strict=True))
KERNEL_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}
UNCLOSED = """
import numpy as np
from sed_deploy.runtime.backends.cuda_memory import CudaSession
session = CudaSession().acquire()
session.device_buffer("x").ensure(1 << 20)
session.pinned_buffer("y").view((1024,), np.float32)
print("left open")
"""


def kernel_rows(classes: int) -> list[tuple]:
    import torch

    from sed_deploy.kernels.reference import linear_class_attention_reference
    from sed_deploy.kernels.triton_linear_attention import linear_class_attention

    rows = []
    for dtype_name, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        for stage, seqs, dim in KERNEL_SHAPES:
            start = time.perf_counter()
            q, k, v = (torch.randn(seqs, classes, dim, device="cuda", dtype=dtype)
                       .reshape(seqs, classes, 4, dim // 4).transpose(1, 2) for _ in range(3))
            got, want = linear_class_attention(q, k, v).double(), linear_class_attention_reference(q, k, v).double()
            error = ((got - want).abs().max() / want.abs().max()).item()
            torch.cuda.synchronize()
            rows.append((f"Triton kernel {stage} T={classes} {dtype_name}", "relative error", error,
                         KERNEL_TOLERANCE[dtype_name], time.perf_counter() - start))
    return rows


def pipeline_rows(backbone: str, classes: int) -> list[tuple]:
    import torch

    from sed_deploy.runtime.backends.options import TorchOptions
    from sed_deploy.runtime.pipeline import Pipeline

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    names = [f"class {i}" for i in range(classes)]
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        # the sed-export command (this study sits below the export layer: it runs it, never imports it)
        subprocess.run([sys.executable, "-m", "sed_deploy.export.cli", "--backbone", backbone,
                        "-o", str(Path(tmp) / backbone), "-q"], check=True)
        rows.append((f"export SED-{backbone} (torch, ONNX Runtime validation)", "done", 0.0, 0.0,
                     time.perf_counter() - start))
        results = {}
        for backend, device in (("torch", "cuda"), ("ort", "cpu")):
            start = time.perf_counter()
            options = TorchOptions(device=device) if backend == "torch" else None
            with Pipeline.from_artifacts(Path(tmp) / backbone, backend=backend, options=options) as pipe:
                pipe.set_vocabulary(names, show_progress=False)
                results[backend] = (pipe(image), time.perf_counter() - start)
        (gpu, gpu_s), (cpu, _) = results["torch"], results["ort"]
        same = all(np.array_equal(a, b) for a, b in zip(gpu.kept, cpu.kept, strict=True))
        rows.append((f"torch on CUDA vs ORT CPU: classes kept, {classes} classes", "stages differing",
                     float(0 if same else 1), 0.0, gpu_s))
        rows.append((f"torch on CUDA vs ORT CPU: scores, {classes} classes", "max abs difference",
                     float(np.abs(gpu.scores - cpu.scores).max()) if same else float("inf"), 1e-3, gpu_s))
    return rows


def device_layer_rows() -> list[tuple]:
    from sed_deploy.runtime.backends.cuda_memory import CudaSession, cuda_api

    api = cuda_api()
    rows = []
    start = time.perf_counter()
    free_before, _ = api.memory_info()
    session = CudaSession(api).acquire()
    data = np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8)
    staged = session.pinned_buffer("in").view(data.shape, data.dtype)
    staged[...] = data
    buffer = session.device_buffer("x")
    buffer.ensure(data.nbytes)
    back = session.pinned_buffer("out").view(data.shape, data.dtype)
    copy_start = time.perf_counter()
    api.copy_to_device(buffer.pointer, staged, session.stream)
    api.copy_to_host(back, buffer.pointer, session.stream)
    session.synchronize()
    gbs = 2 * data.nbytes / (time.perf_counter() - copy_start) / 1e9
    rows.append((f"{api.name}: 64 MB round trip, pinned ({gbs:.1f} GB/s both ways)", "bytes differing",
                 float(np.count_nonzero(back != data)), 0.0, time.perf_counter() - start))
    session.close()
    free_after, _ = api.memory_info()
    rows.append((f"{api.name}: session freed its memory", "MB not returned",
                 max(0.0, (free_before - free_after) / 2**20), 1.0, 0.0))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", UNCLOSED], capture_output=True, text=True, timeout=120)
    clean = done.returncode == 0 and "left open" in done.stdout and "PyCUDA ERROR" not in done.stderr
    rows.append((f"{api.name}: session never closed, interpreter exit", "unclean exits",
                 0.0 if clean else 1.0, 0.0, time.perf_counter() - start))
    return rows


def print_table(rows: list[tuple]) -> bool:
    print(f"| {'check':<62} | {'measure':<18} | {'value':>9} | {'limit':>7} | {'s':>6} | ok |")
    print("|" + "---|" * 6)
    passed = True
    for check, measure, value, limit, seconds in rows:
        ok = value <= limit
        passed &= ok
        mark = "yes" if ok else "NO"
        print(f"| {check:<62} | {measure:<18} | {value:9.2e} | {limit:7.0e} | {seconds:6.1f} | {mark} |")
    return passed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="tiny", choices=["tiny", "B", "L"])
    parser.add_argument("--classes", type=int, default=150, help="vocabulary size (default 150, ADE-150's)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch: this study is for a GPU machine", file=sys.stderr)
        return 1
    rows = kernel_rows(args.classes) + pipeline_rows(args.backbone, args.classes) + device_layer_rows()
    return 0 if print_table(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
