"""The stage contract is written once (`core/contract.py`): its names appear as literals nowhere else.

Every string constant of the source (docstrings aside) is checked against the contract's stage and
tensor names; a name built from a stem (f"decoder{i}", f"topk{level}", `.startswith("decoder")`) is
caught by its stem. "image", "text" and "keep" are also plain words of the JSON outputs and options
(the image a result describes, a report's text timings, sed-bench's forced keep): they are left to
review, and the code that feeds these tensors uses `contract.IMAGE`, `TEXT`, `KEEP`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from sed_deploy.core import contract

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("core", "kernels", "model", "runtime", "export", "engines", "benchmarks", "serve")
GENERIC = {contract.IMAGE, contract.TEXT, contract.KEEP}
STEMS = ("decoder", "topk", "features", "corr_guidance", "guidance")


def contract_names() -> set[str]:
    names = set(contract.STAGE_ORDER)
    for stage in contract.STAGES:
        names.update(stage.inputs + stage.outputs)
    return names - GENERIC


def literals(path: Path, names: set[str], root: Path = REPO) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    in_fstring = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or not isinstance(node.value, str) or id(node) in docstrings:
            continue
        text = node.value
        if text in names or (id(node) in in_fstring and text in STEMS):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {text!r}")
    for node in ast.walk(tree):  # stage.startswith("decoder") and the like
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "startswith", "endswith", "removeprefix", "removesuffix"):
            found += [f"{path.relative_to(root)}:{a.lineno}: {a.value!r}" for a in node.args
                      if isinstance(a, ast.Constant) and a.value in STEMS]
    return found


def offenders(repo: Path = REPO) -> list[str]:
    names = contract_names()
    files = sorted(p for root in ROOTS if (repo / root).is_dir() for p in (repo / root).rglob("*.py"))
    own = repo / "core" / "contract.py"
    return [hit for p in files if p != own for hit in literals(p, names, repo)]


def test_contract_names_are_literals_only_in_the_contract_module():
    assert offenders() == []


def test_the_grep_finds_a_planted_literal(tmp_path):
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "x.py").write_text('"""Docstrings may say decoder1."""\n'
                                               'A = {"decoder2": 1}\nB = [f"topk{i}" for i in range(3)]\n'
                                               'C = "cost".startswith("decoder")\n')
    found = offenders(tmp_path)
    assert any("x.py:2: 'decoder2'" in f for f in found) and any("x.py:3: 'topk'" in f for f in found)
    assert any("x.py:4: 'cost'" in f for f in found) and any("x.py:4: 'decoder'" in f for f in found)
