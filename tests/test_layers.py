"""The architecture as tests: imports point down the layers, module by module, and each layer imports in
an environment without what it promises to be free of (Polygraphy's tests/mod/test_dependencies.py is
the model).

Layers, bottom to top (see ../shared/DESIGN.md): `core`; `kernels`; `model` and `runtime` side by
side; `export` and `engines`; `benchmarks` and `serve`. A lower layer never imports a higher one,
not even lazily inside a function (backends of higher layers register through entry points), and no
two modules import each other, directly or around a longer loop.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("core", "kernels", "model", "runtime", "export", "engines", "benchmarks", "serve")

# layer -> the other layers it may import
ALLOWED = {
    "core": set(),
    "kernels": {"core"},
    "model": {"core", "kernels"},
    "runtime": {"core", "kernels"},
    "export": {"core", "kernels", "model", "runtime"},
    "engines": {"core", "kernels", "runtime"},
    "benchmarks": {"core", "runtime"},
    "benchmarks.latency": {"core", "runtime", "serve"},  # serve_load.py: the load test drives sed-serve's client
    "benchmarks.accuracy": {"core", "runtime"},
    "benchmarks.studies": {"core", "runtime", "kernels", "model", "export"},
    "serve": {"core", "runtime"},
}

# layer -> optional modules it must import without (each is blocked while its modules import)
FREE_OF = {
    "core": ("torch", "torchvision", "onnx", "onnxscript", "triton", "onnxruntime", "tensorrt", "pycuda", "cuda",
             "openvino", "matplotlib", "regex", "ftfy", "tritonclient", "pytriton"),
    "runtime": ("torch", "torchvision", "onnx", "onnxscript", "triton", "onnxruntime", "tensorrt", "pycuda",
                "cuda", "openvino", "matplotlib", "tritonclient", "pytriton"),
    "engines": ("torch", "onnx", "onnxscript", "triton", "onnxruntime", "tensorrt", "pycuda", "cuda"),
    "benchmarks.latency": ("torch", "onnx", "triton", "onnxruntime", "tensorrt", "matplotlib"),
    "benchmarks.accuracy": ("torch", "onnx", "triton", "onnxruntime", "tensorrt", "matplotlib"),
    "serve": ("torch", "onnx", "triton", "tensorrt"),
}
# torch-free modules of kernels (the others are the kernel itself, written in torch and triton)
KERNELS_FREE = ("sed_deploy.kernels", "sed_deploy.kernels.checks", "sed_deploy.kernels.ort_plugin",
                "sed_deploy.kernels.trt_plugin")
# what an edge device installs: the base dependencies of pyproject.toml and nothing else
BARE = {"numpy", "PIL", "tqdm", "filelock", "pydantic", "pydantic_core", "typing_extensions", "annotated_types",
        "typing_inspection"}


def layer_of(module: str) -> str | None:
    """The layer of a `sed_deploy.*` module name ("benchmarks.latency", "runtime", ...), None outside."""
    parts = module.split(".")
    if parts[0] != "sed_deploy" or len(parts) < 2:
        return None
    if parts[1] == "benchmarks" and len(parts) > 2 and parts[2] in ("latency", "accuracy", "studies"):
        return f"benchmarks.{parts[2]}"
    return parts[1]


def folder_module(path: Path, repo: Path) -> str:
    """`sed_deploy.<dotted path>` of a source file of the repository."""
    rel = path.relative_to(repo).with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    return ".".join(["sed_deploy", *parts])


def imported_modules(path: Path, repo: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file, at any depth (lazy ones included)."""
    module = folder_module(path, repo)
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


def source_files(repo: Path) -> list[Path]:
    return sorted(p for root in ROOTS if (repo / root).is_dir() for p in (repo / root).rglob("*.py"))


def module_graph(repo: Path) -> dict[str, dict[str, int]]:
    """module -> {sed_deploy module it imports: line}, names resolved to the modules that exist."""
    files = source_files(repo)
    modules = {folder_module(p, repo) for p in files}
    graph: dict[str, dict[str, int]] = {}
    for path in files:
        module = folder_module(path, repo)
        edges = graph.setdefault(module, {})
        for line, target in imported_modules(path, repo):
            found = target
            while found and found not in modules:  # `from pkg import name`: name may be an attribute
                found = found.rpartition(".")[0]
            target = found or target  # a module outside this tree keeps its name
            if target.startswith("sed_deploy.") and target != module:
                edges.setdefault(target, line)
    return graph


def upward_imports(repo: Path = REPO) -> list[str]:
    problems = []
    for module, edges in module_graph(repo).items():
        layer = layer_of(module)
        for target, line in edges.items():
            other = layer_of(target)
            if other is None or other == layer or layer not in ALLOWED:
                continue
            if other not in ALLOWED[layer]:
                problems.append(f"{module}:{line} imports {target} ({layer} -> {other})")
    return problems


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected groups of more than one node (Tarjan): modules that import each other."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, {}):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def layer_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    layers: dict[str, dict[str, int]] = {}
    for module, edges in graph.items():
        for target in edges:
            a, b = layer_of(module), layer_of(target)
            if a and b and a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
                layers.setdefault(a, {})[b] = 0
    return layers


def test_no_import_runs_up_the_layers():
    assert upward_imports() == []


def test_no_two_modules_import_each_other():
    graph = module_graph(REPO)
    assert import_cycles(graph) == []
    assert import_cycles(layer_graph(graph)) == []


def test_the_checks_see_a_planted_upward_import_and_a_cycle(tmp_path):
    """The checks themselves can fail: a lazy upward import, a relative one, a two-module loop."""
    for folder in ("runtime", "core"):
        (tmp_path / folder).mkdir()
    (tmp_path / "runtime" / "bad.py").write_text("def f():\n    from sed_deploy.export.stages import build_stages\n")
    (tmp_path / "runtime" / "relative.py").write_text("from ..model import build_sed\n")
    (tmp_path / "core" / "a.py").write_text("from .b import x\n")
    (tmp_path / "core" / "b.py").write_text("def f():\n    from sed_deploy.core.a import y\n")
    problems = upward_imports(tmp_path)
    assert any("sed_deploy.runtime.bad:2" in p and "runtime -> export" in p for p in problems)
    assert any("sed_deploy.runtime.relative:1" in p and "runtime -> model" in p for p in problems)
    assert import_cycles(module_graph(tmp_path)) == [["sed_deploy.core.a", "sed_deploy.core.b"]]


BLOCKER = """
import importlib, importlib.abc, pkgutil, sys
mode, names = sys.argv[1], set(sys.argv[2].split(","))
allowed_roots = set(sys.stdlib_module_names) | {"sed_deploy", "_distutils_hack", "cython_runtime"}

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        root = name.split(".")[0]
        if root.startswith("_sysconfigdata"):  # the standard library's own, named per platform
            return None
        if (mode == "block" and root in names) or (mode == "bare" and root not in names | allowed_roots):
            raise ModuleNotFoundError(f"{name} is blocked by the test")
        return None

sys.meta_path.insert(0, Block())
for name in list(sys.modules):
    if name.split(".")[0] not in allowed_roots:
        sys.modules.pop(name, None)
modules = sys.argv[3].split(",")
for root in list(modules):
    package = importlib.import_module(root)
    if hasattr(package, "__path__") and root != "sed_deploy.kernels":
        modules += [m.name for m in pkgutil.walk_packages(package.__path__, root + ".")]
for name in modules:
    importlib.import_module(name)
foreign = sorted({m.split(".")[0] for m in sys.modules if not m.startswith(("_cython", "_sysconfigdata"))}
                 - allowed_roots)
leaked = sorted(m for m in foreign if (m in names) == (mode == "block"))
print("imported", len(modules), "leaked", leaked)
sys.exit(1 if leaked else 0)
"""


def _import(modules: tuple[str, ...], names: tuple[str, ...] | set[str], mode: str = "block"):
    return subprocess.run([sys.executable, "-c", BLOCKER, mode, ",".join(sorted(names)), ",".join(modules)],
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("layer", sorted(FREE_OF))
def test_layer_imports_without_its_optional_dependencies(layer):
    result = _import((f"sed_deploy.{layer}",), FREE_OF[layer])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("layer", ["core", "runtime"])
def test_the_edge_layers_import_in_a_bare_environment(layer):
    """core and runtime import with nothing but the standard library and the base dependencies
    (what `pip install sed-deploy` brings to an edge device before a backend)."""
    result = _import((f"sed_deploy.{layer}",), BARE, mode="bare")
    assert result.returncode == 0, result.stdout + result.stderr


def test_kernels_plugin_glue_imports_without_torch_and_triton():
    result = _import(KERNELS_FREE, ("torch", "triton", "onnx", "onnxscript", "tensorrt"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_blocker_catches_a_dependency():
    """The dependency checks can fail: export imports torch at module level, and numpy is no standard module."""
    result = _import(("sed_deploy.export.stages",), ("torch",))
    assert result.returncode != 0 and "torch is blocked by the test" in result.stderr
    result = _import(("sed_deploy.runtime",), BARE - {"numpy"}, mode="bare")
    assert result.returncode != 0 and "numpy is blocked by the test" in result.stderr
