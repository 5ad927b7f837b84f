# sed-deploy: the commands a newcomer runs. `make demo` and `make test` set up .venv first if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# The matching torch/torchvision pair is installed first and pinned: an unpinned torch would make
# pip download a several-GB build, and PyPI's torchvision does not import beside other torch files.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
EXTRAS     := export,ort,openvino,kernels,demo,bench,serve,dev

.PHONY: setup demo serve-demo test test-all lint typecheck clean bench gpu-check

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_PAIR)
	$(PIP) install --quiet -e ".[$(EXTRAS)]" $(TORCH_PAIR)
	# type stubs of the TensorRT 10.13 API, for mypy only: kept out of site-packages (they would make
	# `import tensorrt` succeed as an empty package) and made parseable
	$(PIP) install --quiet --no-deps --target $(VENV)/trt-stubs tensorrt-stubs==10.13.0.35.1
	$(PY) .ci/fix_trt_stubs.py $(VENV)/trt-stubs
	touch $@

# The main job on the embedded default: SED-B (random weights: no download), exported once and
# reused, then segmented with ONNX Runtime on a sample photograph with an everyday vocabulary.
DEMO_VOCAB := person,sky,flag,rocket,space suit,building,tree,grass,road,car,dog,cat,wall,floor,water
demo: setup
	$(VENV)/bin/sed-export --backbone B -o artifacts/B --reuse
	$(PY) -m sed_deploy.benchmarks.sample_images out/demo/astronaut.png
	$(VENV)/bin/sed-segment --artifacts artifacts/B --backend ort --vocab "$(DEMO_VOCAB)" \
		out/demo/astronaut.png -o out/demo

# The same photo through sed-serve: the server starts on the demo export (free loopback ports), sed-segment
# --server sends the photo and writes the overlay to out/serve-demo, the server stops (SIGTERM).
serve-demo: setup
	$(VENV)/bin/sed-export --backbone B -o artifacts/B --reuse
	$(PY) -m sed_deploy.benchmarks.sample_images out/demo/astronaut.png
	$(PY) -m sed_deploy.serve.demo --artifacts artifacts/B --vocab "$(DEMO_VOCAB)" out/demo/astronaut.png \
		-o out/serve-demo

# The committed CPU latency result: SED-B at 768x768 on PC-459; ONNX Runtime, OpenVINO and PyTorch at
# fp32, bf16 (where the CPU has BF16) and int8 (calibrated on the four sample photographs); CER off,
# k=8 and FORCED keep 32, each reduced precision with its error against fp32; report.json, report.md
# and plots in BENCH_OUT. About 35 minutes on this 2-core CPU, plus the one-time PC-459 embeddings.
BENCH_OUT ?= benchmarks/results/B_cpu_engines
bench: setup
	$(PY) -m sed_deploy.benchmarks.sample_images out/calib/
	$(VENV)/bin/sed-export --backbone B --precision int8 --calib-images out/calib --calib-vocab pc59 -o artifacts/B --reuse
	$(VENV)/bin/sed-bench --artifacts artifacts/B --vocab pc459 --backends ort,openvino,torch --precision fp32,bf16,int8 \
		--topk 8 --keep 32 --warmup 1 --iters 3 --text-classes 4 -o $(BENCH_OUT)

lint: setup
	$(VENV)/bin/ruff check .

# TensorRT cannot be installed here: mypy checks every TensorRT call against the stubs instead
TRT_CODE := engines runtime/backends/tensorrt.py core/tensorrt_api.py runtime/backends/cuda_api.py runtime/backends/cuda_memory.py \
            runtime/backends/cuda_cudart.py runtime/backends/cuda_pycuda.py runtime/engine_cache.py
typecheck: setup
	MYPYPATH=$(VENV)/trt-stubs $(VENV)/bin/mypy $(TRT_CODE)

test: setup lint typecheck
	$(PY) -m pytest

test-all: setup lint typecheck
	$(PY) -m pytest -m "slow or not slow"

# For a fresh machine with an NVIDIA GPU (data-centre or Jetson): sets up .venv-gpu (TensorRT from
# JetPack or NVIDIA's wheels), runs the GPU tests (failing if none passed), builds, checks and times B.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf out .pytest_cache .ruff_cache
