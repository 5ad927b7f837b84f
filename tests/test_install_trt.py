"""The edge install: every package of the `trt` extra but TensorRT itself installs from binary wheels
into a fresh virtual environment (nothing compiled), and then `sed-build --help` and
`sed-build --dry-run` work there with torch absent.

This needs PyPI (it is part of `make test`, so CI runs it). TensorRT is left out because its wheels
come from NVIDIA's index (JetPack ships it as a system package); pycuda is not in the extra (it
compiles against a CUDA toolkit: the `trt-pycuda` extra).

Defect 6: at 641d8cd the extra held pycuda (no wheels: `--only-binary :all:` finds no version) and
`sed-build` imported onnx at module level, which the extra did not install.
"""

from __future__ import annotations

import os
import re
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

tomllib = pytest.importorskip("tomllib", reason="Python >= 3.11 reads pyproject.toml")  # 3.11+
pytestmark = pytest.mark.skipif(os.environ.get("SED_DEPLOY_OFFLINE") == "1", reason="SED_DEPLOY_OFFLINE=1")


def trt_requirements() -> list[str]:
    """The base dependencies and the `trt` extra, without TensorRT itself."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["trt"]
    return [r for r in wanted if not re.match(r"tensorrt\b", r)]


def test_trt_extra_installs_from_wheels_and_sed_build_runs_without_torch(tiny_artifacts, tmp_path):
    requirements = trt_requirements()
    assert any(r.startswith("cuda-bindings") for r in requirements) and not any("pycuda" in r for r in requirements)
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, "--only-binary", ":all:", *requirements)  # fails if any of them would need a compiler
    run(*pip, "--no-deps", REPO)
    run(python, "-c", "import importlib.util as u, sys; sys.exit(any(u.find_spec(m) for m in ('torch', 'onnx')))")
    assert "sed-build" in run(env / "bin" / "sed-build", "--help").stdout
    out = run(env / "bin" / "sed-build", tiny_artifacts[0], "--precision", "fp16", "--dry-run", "-q").stdout
    assert "dry run: no engines built" in out and "memory estimate" in out
