"""The wheel works outside the repository: built, installed into a fresh venv with only `[ort]`, and run.

`pip wheel --no-deps` builds the package from a copy of the source tree (the checkout is left as it
is); a fresh virtual environment gets the wheel with the `ort` extra only (numpy, Pillow, tqdm, filelock, pydantic,
onnxruntime, regex, ftfy, at the versions of this environment so that pip's cache serves them);
then `sed-segment --vocab ade150` runs from an empty temporary folder on the tiny artifacts. It
proves the packaged vocabularies are found, the runtime imports without torch, onnx or the
repository, and the console script works. It needs PyPI or pip's cache for the dependencies and is
skipped with the reason when neither can serve them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
ORT_PACKAGES = ("numpy", "pillow", "onnxruntime", "regex", "ftfy", "wcwidth", "tqdm", "filelock", "pydantic",
                "pydantic-core", "typing-extensions", "annotated-types", "typing-inspection")
SKIP_COPY = shutil.ignore_patterns(".git", ".venv", "artifacts", "out", "build", "dist", "*.egg-info", "__pycache__",
                                   ".pytest_cache", ".ruff_cache", ".mypy_cache", "*.onnx", "*.onnx.data")


def _run(command: list[str], cwd: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def _clean_env() -> dict:
    """The environment without anything that would let the repository or this venv leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "SED_DEPLOY_VOCAB"))}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


@pytest.mark.packaging
def test_wheel_installs_with_only_ort_and_segments_with_a_packaged_vocabulary(tiny_artifacts, tmp_path):
    artifacts, _ = tiny_artifacts
    source = tmp_path / "src"
    shutil.copytree(REPO, source, ignore=SKIP_COPY)
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(source)],
                 cwd=tmp_path, timeout=600, env=_clean_env())
    if built.returncode != 0 and "Could not find a version that satisfies" in built.stderr:
        pytest.skip(f"cannot fetch the build backend (setuptools) from PyPI or pip's cache: {built.stderr[-300:]}")
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next(wheels.glob("sed_deploy-*.whl"))
    with __import__("zipfile").ZipFile(wheel) as archive:
        packaged = {n for n in archive.namelist() if n.startswith("sed_deploy/runtime/vocab/")}
    assert {f"sed_deploy/runtime/vocab/{n}.json" for n in
            ("ade150", "ade847", "pc59", "pc459", "voc20", "voc20b", "coco")} <= packaged

    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, env=_clean_env()).returncode == 0
    py = venv / "bin" / "python"
    pins = [f"{name}=={version(name)}" for name in ORT_PACKAGES]
    deps = _run([str(py), "-m", "pip", "install", "-q", *pins], cwd=tmp_path, timeout=600, env=_clean_env())
    if deps.returncode != 0:
        pytest.skip(f"cannot install the [ort] dependencies from PyPI or pip's cache: {deps.stderr.strip()[-300:]}")
    # the extra resolves from what is installed now: no network needed, and nothing else comes in
    install = _run([str(py), "-m", "pip", "install", "-q", "--no-index", f"{wheel}[ort]"], cwd=tmp_path,
                   env=_clean_env())
    assert install.returncode == 0, install.stderr[-2000:]
    listed = _run([str(py), "-m", "pip", "list", "--format=freeze"], cwd=tmp_path, env=_clean_env()).stdout
    assert not any(line.lower().startswith(("torch==", "onnx==", "triton==")) for line in listed.splitlines())

    work = tmp_path / "elsewhere"
    work.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(work / "street.png")
    run = _run([str(venv / "bin" / "sed-segment"), "--artifacts", str(artifacts), "--vocab", "ade150",
                "street.png", "-o", "out", "-q"], cwd=work, timeout=600, env=_clean_env())
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    assert sorted(p.name for p in (work / "out").iterdir()) == ["street.json", "street_labels.png",
                                                                "street_overlay.png"]
    where = _run([str(py), "-c", "import sed_deploy.runtime as r; print(r.__file__)"], cwd=work, env=_clean_env())
    assert str(venv) in where.stdout and str(REPO) not in where.stdout
