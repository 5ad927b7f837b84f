# sed-deploy: the commands a newcomer runs. `make demo` and `make test` set up .venv first if missing.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# The matching torch/torchvision pair is installed first and pinned: an unpinned torch would make
# pip download a several-GB build, and PyPI's torchvision does not import beside other torch files.
TORCH_PAIR := torch==2.14.1 torchvision==0.29.1
EXTRAS     := export,ort,kernels,demo,dev

.PHONY: setup demo test test-all lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH_PAIR)
	$(PIP) install --quiet -e ".[$(EXTRAS)]" $(TORCH_PAIR)
	touch $@

demo: setup
	$(PY) -m sed_deploy.model.demo --output out/demo

lint: setup
	$(VENV)/bin/ruff check .

test: setup lint
	$(PY) -m pytest

test-all: setup lint
	$(PY) -m pytest -m "slow or not slow"

clean:
	rm -rf out .pytest_cache .ruff_cache
