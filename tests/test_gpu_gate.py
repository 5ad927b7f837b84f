"""`make gpu-check` must fail on a run where every GPU test skipped (SED_DEPLOY_REQUIRE_GPU_TESTS=1),
and the GPU tests are gated on the runtime's CUDA layer, never on torch.cuda."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
GPU_TEST = "tests/runtime/test_cuda_memory.py::test_real_gpu_round_trip_and_events"


def _pytest(require: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "SED_DEPLOY_REQUIRE_GPU_TESTS": "1" if require else "0"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", GPU_TEST],
                          cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=300)


def test_all_gpu_tests_skipped_fails_when_required():
    from conftest import _gpu_reason

    if _gpu_reason() is None:
        pytest.skip("this machine has a GPU: the gpu test runs instead of skipping")
    assert _pytest(require=False).returncode == 0
    required = _pytest(require=True)
    assert required.returncode == 1 and "FAILED: no gpu test passed (1 collected; no usable CUDA GPU" in required.stderr
