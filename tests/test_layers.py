"""The architecture as tests: imports point down the layers, and each layer imports without what it promises
to be free of (Polygraphy's tests/mod/test_dependencies.py is the model).

Layers, bottom to top (see ../shared/DESIGN.md): `runtime` (with `kernels`, whose torch-free modules
the runtime uses for plugin registration), `model`, then `export` and `engines` side by side, then
`benchmarks` and `serve`. A lower layer never imports a higher one, not even lazily inside a
function: backends of higher layers register themselves through entry points.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# package -> the sed_deploy packages it may import (itself always)
ALLOWED = {
    "runtime": {"kernels"},
    "kernels": {"runtime"},
    "model": {"runtime", "kernels"},
    "export": {"runtime", "kernels", "model"},
    "engines": {"runtime", "kernels"},
    "benchmarks.latency": {"runtime"},
    "benchmarks.accuracy": {"runtime"},
    "benchmarks.studies": {"runtime", "kernels", "model"},
    "serve": {"runtime"},
}
# the runtime may reach kernels only for plugin registration: these modules, which are torch-free
RUNTIME_KERNEL_MODULES = {"sed_deploy.kernels.ort_plugin", "sed_deploy.kernels.trt_plugin"}

# package -> optional modules it must import without (each is blocked while its modules import)
FREE_OF = {
    "runtime": ("torch", "torchvision", "onnx", "onnxscript", "triton", "onnxruntime", "tensorrt", "pycuda",
                "cuda", "openvino", "matplotlib", "tqdm"),
    "engines": ("torch", "onnx", "onnxscript", "triton", "onnxruntime", "tensorrt", "pycuda", "cuda"),
    "benchmarks.latency": ("torch", "onnx", "triton", "onnxruntime", "tensorrt", "matplotlib"),
    "benchmarks.accuracy": ("torch", "onnx", "triton", "onnxruntime", "tensorrt", "matplotlib"),
    "serve": ("torch", "onnx", "triton", "tensorrt"),
}
# torch-free modules of kernels (the others are the kernel itself, written in torch and triton)
KERNELS_FREE = ("sed_deploy.kernels", "sed_deploy.kernels.checks", "sed_deploy.kernels.ort_plugin",
                "sed_deploy.kernels.trt_plugin")


def package_of(module: str) -> str | None:
    """The layer of a `sed_deploy.*` module name ("benchmarks.latency", "runtime", ...), None outside."""
    parts = module.split(".")
    if parts[0] != "sed_deploy" or len(parts) < 2:
        return None
    if parts[1] == "benchmarks" and len(parts) > 2 and parts[2] in ("latency", "accuracy", "studies"):
        return f"benchmarks.{parts[2]}"
    return parts[1]


def folder_module(path: Path) -> str:
    """`sed_deploy.<dotted path>` of a source file of the repository."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["sed_deploy", *parts])


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth (lazy ones included)."""
    module = folder_module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def source_files() -> list[Path]:
    roots = ("runtime", "kernels", "model", "export", "engines", "benchmarks", "serve")
    return sorted(p for root in roots if (REPO / root).is_dir() for p in (REPO / root).rglob("*.py"))


def upward_imports() -> list[str]:
    problems = []
    for path in source_files():
        layer = package_of(folder_module(path))
        if layer not in ALLOWED:
            continue
        for line, target in imported_modules(path):
            other = package_of(target)
            if other is None or other == layer or other == "benchmarks":
                continue
            if other not in ALLOWED[layer]:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {target} ({layer} -> {other})")
            elif layer == "runtime" and other == "kernels" and target not in RUNTIME_KERNEL_MODULES \
                    and target.rsplit(".", 1)[0] not in RUNTIME_KERNEL_MODULES:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {target} (runtime -> kernels is for "
                                "plugin registration only)")
    return problems


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_the_check_sees_a_lazy_upward_import(tmp_path, monkeypatch):
    """The checker itself can fail: a function-level import of a higher layer is reported."""
    fake_repo = tmp_path
    (fake_repo / "runtime").mkdir()
    (fake_repo / "runtime" / "bad.py").write_text("def f():\n    from sed_deploy.export.stages import build_stages\n")
    (fake_repo / "runtime" / "relative.py").write_text("from ..model import build_sed\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", fake_repo)
    problems = upward_imports()
    assert any("runtime/bad.py:2" in p and "runtime -> export" in p for p in problems)
    assert any("runtime/relative.py:1" in p and "runtime -> model" in p for p in problems)


BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
blocked = set(sys.argv[1].split(","))

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError(f"{name} is blocked by the test")
        return None

sys.meta_path.insert(0, Block())
for name in blocked:
    sys.modules.pop(name, None)
modules = sys.argv[2].split(",")
for root in list(modules):
    package = importlib.import_module(root)
    if hasattr(package, "__path__") and root != "sed_deploy.kernels":
        modules += [m.name for m in pkgutil.walk_packages(package.__path__, root + ".")]
for name in modules:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in blocked)
print("imported", len(modules), "leaked", leaked)
sys.exit(1 if leaked else 0)
"""


def _import_with_blocked(modules: tuple[str, ...], blocked: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BLOCKER, ",".join(blocked), ",".join(modules)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layer", sorted(FREE_OF))
def test_layer_imports_without_its_optional_dependencies(layer):
    package = f"sed_deploy.{layer}"
    if not (REPO / layer.replace(".", "/")).is_dir():
        pytest.skip(f"{layer} does not exist yet")
    result = _import_with_blocked((package,), FREE_OF[layer])
    assert result.returncode == 0, result.stdout + result.stderr


def test_kernels_plugin_glue_imports_without_torch_and_triton():
    result = _import_with_blocked(KERNELS_FREE, ("torch", "triton", "onnx", "onnxscript", "tensorrt"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_blocker_catches_a_dependency():
    """The dependency check can fail: export imports torch at module level."""
    result = _import_with_blocked(("sed_deploy.export.stages",), ("torch",))
    assert result.returncode != 0 and "torch is blocked by the test" in result.stderr
