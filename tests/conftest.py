"""Shared fixtures: the tiny model, the packaged benchmark vocabularies, and the `gpu` marker.

`gpu` tests run only where a real NVIDIA GPU answers through the runtime's CUDA layer (cuda-python's
bindings or pycuda), never judged by torch.cuda: a Jetson with PyPI's CPU-only torch still runs
the TensorRT tests. Tests that run kernels through torch also take the `torch_cuda` fixture. With
SED_DEPLOY_REQUIRE_GPU_TESTS=1 (`make gpu-check`) the run fails unless at least one `gpu` test
passed, so a GPU machine on which every GPU test skipped is never green.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import fakes` (the TensorRT and CUDA doubles)
_GPU_RUN = {"reason": None, "passed": 0, "marked": 0}


def shared_vocab_dir() -> Path:
    """The benchmark vocabularies shipped as package data (`runtime/vocab/`)."""
    from sed_deploy.runtime.vocabulary import PACKAGED_DIR

    return PACKAGED_DIR


def load_vocab(name: str) -> list[str]:
    return json.loads((shared_vocab_dir() / f"{name}.json").read_text(encoding="utf-8"))


def _gpu_reason() -> str | None:
    """None when a CUDA GPU answers through the runtime's CUDA layer, else why not (no torch involved)."""
    from sed_deploy.core.errors import first_line
    from sed_deploy.runtime.backends.cuda_memory import cuda_api

    try:
        count = cuda_api().device_count()
    except Exception as exc:  # no layer installed, no driver, no device
        return f"no usable CUDA GPU ({first_line(exc)})"
    return None if count else "no CUDA GPU on this machine"


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            _GPU_RUN["marked"] += 1
            reason = reason or _gpu_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
    _GPU_RUN["reason"] = reason


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "gpu" in report.keywords:
        _GPU_RUN["passed"] += 1


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("SED_DEPLOY_REQUIRE_GPU_TESTS") == "1" and _GPU_RUN["passed"] == 0:
        why = _GPU_RUN["reason"] or "every one skipped or failed"
        sys.stderr.write(f"\nFAILED: no gpu test passed ({_GPU_RUN['marked']} collected; {why})\n")
        session.exitstatus = 1


@pytest.fixture
def torch_cuda():
    """torch with CUDA, for tests that run kernels through torch (a Jetson's PyPI torch has none)."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA (this torch is CPU-only)")
    return torch


@pytest.fixture(scope="session")
def tiny_model():
    from sed_deploy.model import build_sed

    return build_sed("tiny", seed=0)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never write to the user's real cache from a test."""
    monkeypatch.setenv("SED_DEPLOY_CACHE", str(tmp_path_factory.mktemp("cache")))


ARTIFACTS_VOCAB = ["person", "dog", "tree, forest", "sky", "road"]


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """SED-tiny exported once per session, fp32 and fp16 graphs (with a 5-name vocabulary file `street.txt`)."""
    from sed_deploy.export.artifacts import ExportOptions, export_artifacts

    root = tmp_path_factory.mktemp("artifacts")
    vocab = root / "street.txt"
    vocab.write_text("\n".join(ARTIFACTS_VOCAB) + "\n")
    out = root / "tiny"
    manifest = export_artifacts(ExportOptions(backbone="tiny", output=out, vocab=str(vocab), quiet=True,
                                              precisions=("fp32", "fp16")))
    return out, manifest


def unit_embeddings(count: int, seed: int = 0, dim: int = 32) -> np.ndarray:
    """[count, 80, dim] random text embeddings, unit length like the text stage's (tiny: dim 32)."""
    e = np.random.default_rng(seed).standard_normal((count, 80, dim)).astype(np.float32)
    return e / np.linalg.norm(e, axis=-1, keepdims=True)


def write_calibration_images(folder: Path, count: int = 3, seed: int = 0) -> Path:
    """`count` small generated PNGs (gradients plus noise, different per image) in `folder`."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:96, 0:128]
    for i in range(count):
        base = np.stack([(2 * x + 40 * i) % 256, (3 * y + 17 * i) % 256, (x + y) * (i + 1) % 256], -1)
        noisy = 0.7 * base + rng.integers(0, 76, base.shape)
        Image.fromarray(noisy.astype(np.uint8)).save(folder / f"calib{i}.png")
    return folder


@pytest.fixture(scope="session")
def tiny_int8(tmp_path_factory):
    """SED-tiny exported once per session by the CLI with int8 graphs, calibrated on 3 generated images
    with the 5-name vocabulary; returns (folder, manifest, calibration folder, vocabulary file)."""
    from sed_deploy.core.manifest import Manifest
    from sed_deploy.export.cli import main

    root = tmp_path_factory.mktemp("int8")
    vocab = root / "street.txt"
    vocab.write_text("\n".join(ARTIFACTS_VOCAB) + "\n")
    images = write_calibration_images(root / "calib")
    out = root / "tiny"
    code = main(["--backbone", "tiny", "--precision", "int8", "--calib-images", str(images), "--calib-vocab",
                 str(vocab), "--validate-counts", "2", "-o", str(out), "-q"])
    assert code == 0
    return out, Manifest.load(out), images, vocab
