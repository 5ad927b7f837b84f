"""The torch-free tokenizer gives open_clip's token ids."""

import gzip
import json
import random
import subprocess
import sys

import numpy as np
import open_clip
import pytest

from sed_deploy.core.errors import ArtifactError
from sed_deploy.runtime.prompts import IMAGENET_TEMPLATES
from sed_deploy.runtime.tokenizer import ClipTokenizer

from ..conftest import shared_vocab_dir

TRICKY = [
    "MixedCase Words", "it's, they're; we'll", "U.S.A. 2024 No.5 3.14", "München", "東京 tower", "naïve café",
    "MÃ¼nchen", "&amp;lt; tag &gt;", "🚗 car 👍🏽", "tabs\tand\nnewlines   and  spaces", "", "   ", "x" * 300,
    "word " * 90, "\u200bzero\u00a0width", "ÀÉÎÕÜ ßẞ", "don’t", "résumé-like-words_with_underscores",
]


@pytest.fixture(scope="module")
def tokenizer():
    return ClipTokenizer.from_file(open_clip.tokenizer.default_bpe())


def test_every_benchmark_name_in_two_templates(tokenizer):
    rng = random.Random(0)
    texts = []
    for path in sorted(shared_vocab_dir().glob("*.json")):
        for name in json.loads(path.read_text()):
            texts += [IMAGENET_TEMPLATES[0].format(name), rng.choice(IMAGENET_TEMPLATES).format(name)]
    assert len(texts) > 3000
    np.testing.assert_array_equal(tokenizer(texts), open_clip.tokenize(texts).numpy())


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_strings(tokenizer, text):
    np.testing.assert_array_equal(tokenizer([text]), open_clip.tokenize([text]).numpy())


def test_long_text_keeps_the_end_token(tokenizer):
    row = tokenizer(["word " * 200])[0]
    assert row[0] == 49406 and row[-1] == 49407 and (row > 0).all()


def test_bad_merges_file(tmp_path):
    path = tmp_path / "bpe.txt.gz"
    path.write_bytes(b"not gzip")
    with pytest.raises(ArtifactError, match="cannot read the tokenizer merges file"):
        ClipTokenizer.from_file(path)
    path.write_bytes(gzip.compress(b"#header\na b\n"))
    with pytest.raises(ArtifactError, match="is not a CLIP merges file"):
        ClipTokenizer.from_file(path)


def test_imports_without_torch():
    code = "import sys; sys.modules['torch'] = None\nimport sed_deploy.runtime.tokenizer\nprint('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
