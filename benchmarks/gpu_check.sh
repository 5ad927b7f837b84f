#!/usr/bin/env bash
# One command for a GPU owner: the GPU tests, engines for the tiny and B artifacts (fp32 and fp16)
# each checked against ONNX Runtime, and a latency table of TensorRT next to ONNX Runtime.
# Needs an NVIDIA GPU, TensorRT (pip install 'sed-deploy[trt]', or JetPack's python3-libnvinfer)
# and pycuda. Prints what it does; stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${VENV:-.venv}/bin
OUT=${GPU_CHECK_OUT:-out/gpu_check}
mkdir -p "$OUT"

echo "== environment"
"$BIN/python" -c "import tensorrt, pycuda.driver as d; d.init(); print('TensorRT', tensorrt.__version__, '|', d.Device(0).name())"

echo "== GPU tests (Triton kernel on CUDA, TensorRT plugin, engines of the tiny model)"
"$BIN/python" -m pytest -q -m gpu

echo "== SED-B: export (reused if current), engines fp32 and fp16 with --check"
"$BIN/sed-export" --backbone B -o artifacts/B --reuse
"$BIN/sed-build" artifacts/B --precision fp32 --check
"$BIN/sed-build" artifacts/B --precision fp16 --check

echo "== latency on PC-459: TensorRT and ONNX Runtime, CER off and on"
"$BIN/sed-bench" --artifacts artifacts/B --vocab pc459 --backends tensorrt,ort --topk 8 --keep 32 \
    --warmup 5 --iters 50 -o "$OUT/bench_B"
cat "$OUT/bench_B/report.md"
