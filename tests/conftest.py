"""Shared fixtures: the tiny model, the packaged benchmark vocabularies, and the `gpu` marker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_vocab_dir() -> Path:
    """The benchmark vocabularies shipped as package data (`runtime/vocab/`)."""
    from sed_deploy.runtime.vocabulary import PACKAGED_DIR

    return PACKAGED_DIR


def load_vocab(name: str) -> list[str]:
    return json.loads((shared_vocab_dir() / f"{name}.json").read_text(encoding="utf-8"))


def _gpu_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch with CUDA"
    if not torch.cuda.is_available():
        return "no CUDA GPU on this machine"
    return None


def pytest_collection_modifyitems(config, items):
    reason = None
    for item in items:
        if "gpu" in item.keywords:
            reason = reason or _gpu_reason()
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


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
