"""The backend base class checks feeds against the manifest; the runtime never imports torch."""

import subprocess
import sys

import numpy as np
import pytest

from sed_deploy.runtime.backends.base import BackendError
from sed_deploy.runtime.backends.onnxruntime import OrtBackend
from sed_deploy.runtime.backends.options import BackendOptions


@pytest.fixture(scope="module")
def cost_backend(tiny_artifacts):
    out, manifest = tiny_artifacts
    return OrtBackend(manifest.stages["cost"], out, manifest, BackendOptions()).load()


def _feeds(t=3):
    return {"dense": np.zeros((1, 32, 4, 4), np.float32), "text": np.zeros((t, 80, 32), np.float32)}


def test_good_feeds_run_and_are_timed(cost_backend):
    out = cost_backend.run(_feeds())
    assert out["volume"].shape == (3, 80, 4, 4) and out["topk0"].dtype == np.int32
    assert cost_backend.last_run_seconds > 0


@pytest.mark.parametrize("change,match", [
    (lambda f: f.pop("text"), r"expected inputs \['dense', 'text'\], got \['dense'\]"),
    (lambda f: f.update(text=f["text"].astype(np.float64)), "input text: expected float32, got float64"),
    (lambda f: f.update(dense=f["dense"][0]), r"input dense: expected rank 4 \[1, 32, 4, 4\], got shape \[32, 4, 4\]"),
    (lambda f: f.update(dense=np.zeros((1, 32, 5, 4), np.float32)), "expected size 4 on axis 2"),
    (lambda f: f.update(text=np.zeros((0, 80, 32), np.float32)), "dynamic axis T must not be empty"),
])
def test_bad_feeds_are_clear_errors(cost_backend, change, match):
    feeds = _feeds()
    change(feeds)
    with pytest.raises(BackendError, match=match):
        cost_backend.run(feeds)


def test_run_before_load(tiny_artifacts):
    out, manifest = tiny_artifacts
    backend = OrtBackend(manifest.stages["cost"], out, manifest, BackendOptions())
    with pytest.raises(BackendError, match="run\\(\\) called before load\\(\\)"):
        backend.run(_feeds())


def test_runtime_imports_without_torch():
    code = (
        "import sys, pkgutil, importlib\n"
        "sys.modules['torch'] = None\n"  # any import of torch now fails
        "import sed_deploy.runtime as rt\n"
        "for m in pkgutil.walk_packages(rt.__path__, 'sed_deploy.runtime.'):\n"
        "    importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
