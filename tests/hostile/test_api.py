"""API misuse: every wrong type or empty input is one `SedDeployError` with one line, never a TypeError."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from sed_deploy.core.errors import ConfigError, ImageError, SedDeployError, VocabularyError
from sed_deploy.runtime.backends.options import OrtOptions, TensorrtOptions
from sed_deploy.runtime.pipeline import Pipeline

BAD_IMAGES = {
    "None": (None, "got NoneType"),
    "a number": (3, "got int"),
    "a float": (2.5, "got float"),
    "a list": ([[0, 1], [2, 3]], "got list"),
    "a dict": ({"image": 1}, "got dict"),
    "an empty array": (np.zeros((0, 0, 3), np.uint8), "no pixels"),
    "a row of nothing": (np.zeros((5, 0), np.uint8), "no pixels"),
    "a 1-d array": (np.zeros(12, np.uint8), "got shape [12]"),
    "a 4-d array": (np.zeros((1, 4, 4, 3), np.uint8), "got shape [1, 4, 4, 3]"),
    "five channels": (np.zeros((4, 4, 5), np.uint8), "got shape [4, 4, 5]"),
    "complex pixels": (np.zeros((4, 4), np.complex64), "dtype complex64"),
    "object pixels": (np.array([[None, None]]), "dtype object"),
    "an empty image": (Image.new("RGB", (0, 0)), "no pixels"),
    "empty bytes": (b"", "not an image"),
    "text bytes": (b"GIF89a but not really", "not an image"),
    "an empty path": ("", "path is empty"),
    "a missing path": ("/no/such/image.png", "no such file"),
    "a folder": ("/", "is a directory"),
}


@pytest.fixture(scope="module")
def pipeline(tiny_artifacts):
    artifacts, _ = tiny_artifacts
    with Pipeline.from_artifacts(artifacts, backend="ort") as p:
        p.set_vocabulary(["sky", "road"], show_progress=False)
        yield p


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_pipeline_call_with_a_wrong_image(pipeline, case):
    value, message = BAD_IMAGES[case]
    with pytest.raises(ImageError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        pipeline(value)
    assert "\n" not in str(info.value)


def test_odd_but_usable_arrays(pipeline):
    assert pipeline(np.ones((3, 4), bool)).labels.shape == (3, 4)
    assert pipeline(np.full((5, 6, 1), 0.5, np.float32)).labels.shape == (5, 6)
    assert pipeline(np.array([[np.nan, np.inf], [-np.inf, 1.0]])).labels.shape == (2, 2)
    assert pipeline(np.zeros((4, 4, 2), np.uint16)).labels.shape == (4, 4)


@pytest.mark.parametrize("names, message", [
    (None, "got NoneType"), ("sky", "got str"), (b"sky", "got bytes"), (5, "got int"), ([], "empty"),
    ([1, 2], "class name #0 is 1"), (["sky", None], "class name #1 is None"), (["sky", "  "], "#1 is '  '"),
    (["\u200b"], "empty after normalisation"), (["Sky", "SKY"], "same class"),
])
def test_set_vocabulary_with_wrong_names(pipeline, names, message):
    with pytest.raises(VocabularyError, match=message):
        pipeline.set_vocabulary(names, show_progress=False)


def test_set_vocabulary_with_wrong_embeddings(pipeline):
    with pytest.raises(VocabularyError, match="numpy array"):
        pipeline.set_vocabulary(["sky"], embeddings=[[0.0]], show_progress=False)
    with pytest.raises(VocabularyError, match=r"expected embeddings \[1,80,32\]"):
        pipeline.set_vocabulary(["sky"], embeddings=np.zeros((2, 80, 32), np.float32), show_progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"path": None}, "path must be str or PathLike, got NoneType"),
    ({"path": 5}, "got int"),
    ({"topk": "3"}, "topk must be int or None, got str"),
    ({"topk": True}, "got bool"),
    ({"topk": 0}, "top-k must be between 1 and 16"),
    ({"cer": "yes"}, "cer must be bool"),
    ({"options": {"threads": 2}}, "options must be BackendOptions or None, got dict"),
    ({"options": OrtOptions(providers=("cpu",)), "backend": "openvino"},
     "providers is a setting of the ort backend, not of openvino"),
    ({"options": TensorrtOptions(cuda_graphs=True), "backend": "ort"},
     "cuda_graphs is a setting of the tensorrt backend, not of ort"),
    ({"max_pixels": 0}, "pixel budget"),
    ({"max_pixels": "big"}, "pixel budget"),
    ({"backend": 3}, "backend must be str"),
])
def test_from_artifacts_with_wrong_arguments(tiny_artifacts, kwargs, message):
    artifacts, _ = tiny_artifacts
    arguments = {"path": artifacts, "backend": "ort", **kwargs}
    with pytest.raises(SedDeployError, match=message) as info:
        Pipeline.from_artifacts(**arguments)
    assert isinstance(info.value, ConfigError | SedDeployError) and "\n" not in str(info.value)


def test_calling_before_a_vocabulary(tiny_artifacts):
    artifacts, _ = tiny_artifacts
    with Pipeline.from_artifacts(artifacts, backend="ort") as fresh, pytest.raises(ConfigError, match="no vocabulary"):
        fresh(np.zeros((4, 4, 3), np.uint8))
