"""A tiny artifacts folder, exported once per test session."""

import pytest

from sed_deploy.export.artifacts import ExportOptions, export_artifacts

VOCAB = ["person", "dog", "tree, forest", "sky", "road"]


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("artifacts")
    vocab = root / "street.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    out = root / "tiny"
    manifest = export_artifacts(ExportOptions(backbone="tiny", output=out, vocab=str(vocab), quiet=True))
    return out, manifest
