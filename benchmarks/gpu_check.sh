#!/usr/bin/env bash
# `make gpu-check`: one command for a fresh machine with an NVIDIA GPU (a data-centre GPU or a Jetson).
# 1. sets up $GPU_VENV (default .venv-gpu) once: on a Jetson with JetPack's TensorRT (the system package
#    python3-libnvinfer, seen through --system-site-packages), elsewhere with NVIDIA's TensorRT wheels for
#    the driver's CUDA major; plus this project with the trt, export, kernels and dev extras;
# 2. runs the GPU tests and FAILS unless at least one passed (a GPU machine where every GPU test
#    skipped is a broken set-up, not a green run);
# 3. exports SED-B (reused when current), builds fp32 and fp16 engines with --check, and prints a
#    latency table of TensorRT next to ONNX Runtime.
# Stops at the first failure. SKIP_B=1 stops after the GPU tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
GPU_VENV=${GPU_VENV:-.venv-gpu}
OUT=${GPU_CHECK_OUT:-out/gpu_check}
TORCH_PAIR=${TORCH_PAIR:-"torch==2.14.1 torchvision==0.29.1"}
BIN=$GPU_VENV/bin

echo "== GPU"
if [ -e /etc/nv_tegra_release ]; then
    JETSON=1
    head -1 /etc/nv_tegra_release
elif command -v nvidia-smi >/dev/null 2>&1; then
    JETSON=0
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
else
    echo "no NVIDIA GPU here (no nvidia-smi, no /etc/nv_tegra_release): make gpu-check is for GPU machines" >&2
    exit 1
fi

if [ ! -e "$GPU_VENV/.installed" ]; then
    echo "== setting up $GPU_VENV"
    if [ "$JETSON" = 1 ]; then
        if ! "$PYTHON" -c "import tensorrt" 2>/dev/null; then
            echo "JetPack's TensorRT is missing: sudo apt install python3-libnvinfer (JetPack >= 6.1)" >&2
            exit 1
        fi
        "$PYTHON" -m venv --system-site-packages "$GPU_VENV"
        EXTRAS=trt,export,dev     # triton has no Jetson wheels: the kernel tests skip there
        # torch only exports the tiny test artifacts here (on the CPU). Unverified on a device: if pip
        # reports a cuda-bindings conflict between PyPI's aarch64 torch and the trt extra (12.x on
        # aarch64), set TORCH_PAIR to a torch build for JetPack and rerun.
    else
        "$PYTHON" -m venv "$GPU_VENV"
        CUDA_MAJOR=$(nvidia-smi | sed -n 's/.*CUDA Version: \([0-9]*\).*/\1/p' | head -1)
        "$BIN/pip" install --quiet "tensorrt-cu${CUDA_MAJOR:-12}>=10.3"
        EXTRAS=trt,export,kernels,dev
    fi
    "$BIN/pip" install --quiet $TORCH_PAIR
    "$BIN/pip" install --quiet -e ".[$EXTRAS]" $TORCH_PAIR
    touch "$GPU_VENV/.installed"
fi
mkdir -p "$OUT"

echo "== environment"
"$BIN/python" - <<'EOF'
import tensorrt
from sed_deploy.runtime.backends.cuda_memory import cuda_api
api = cuda_api()
print("TensorRT", tensorrt.__version__, "|", api.name, "|", *api.device_info(0))
EOF

echo "== GPU tests (TensorRT engines of the tiny model, the device layer, the plugin and kernel where possible)"
SED_DEPLOY_REQUIRE_GPU_TESTS=1 "$BIN/python" -m pytest -q -m gpu -rs
[ "${SKIP_B:-0}" = 1 ] && exit 0

echo "== SED-B: export (reused if current), engines fp32 and fp16 with --check"
"$BIN/sed-export" --backbone B --precision fp16 -o artifacts/B --reuse
"$BIN/sed-build" artifacts/B --precision fp32 --vocab pc459 --check
"$BIN/sed-build" artifacts/B --precision fp16 --vocab pc459 --check

echo "== latency on PC-459: TensorRT and ONNX Runtime, CER off and on"
"$BIN/sed-bench" --artifacts artifacts/B --vocab pc459 --backends tensorrt,ort --topk 8 --keep 32 \
    --warmup 5 --iters 50 -o "$OUT/bench_B"
cat "$OUT/bench_B/report.md"
