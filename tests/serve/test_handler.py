"""The request handler without Triton: every kind of bad input refused in one line, the pipeline
unharmed after it, vocabularies switched per request and never mixed, the LRU bounds kept."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.serve.handler import BadRequest, Limits, RequestHandler
from sed_deploy.serve.vocab_cache import VocabularyCache
from tests.conftest import ARTIFACTS_VOCAB


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose pixel data is missing."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def request(image: bytes | None, classes=None, topk=None) -> dict[str, np.ndarray]:
    inputs = {}
    if image is not None:
        inputs["image"] = np.array([image], dtype=object)
    if classes is not None:
        inputs["classes"] = np.array([c.encode() if isinstance(c, str) else c for c in classes], dtype=object)
    if topk is not None:
        inputs["topk"] = np.array([topk], dtype=np.int32)
    return inputs


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (40 + 7 * i, 50 - 3 * i, 3), dtype=np.uint8) for i in range(3)]


@pytest.fixture(scope="module")
def handler(tiny_artifacts):
    folder, _ = tiny_artifacts
    pipeline = Pipeline.from_artifacts(folder, backend="ort", options=BackendOptions(threads=1))
    pipeline.set_vocabulary(ARTIFACTS_VOCAB, show_progress=False)
    default = pipeline.text
    pipeline.cache = VocabularyCache(max_entries=4)
    return RequestHandler(pipeline, ARTIFACTS_VOCAB, default, Limits(max_classes=20, max_pixels=10_000))


@pytest.fixture(scope="module")
def local(tiny_artifacts):
    folder, _ = tiny_artifacts
    return Pipeline.from_artifacts(folder, backend="ort", options=BackendOptions(threads=1))


BAD = {
    "missing image": (request(None, topk=3), "image: missing"),
    "empty image": (request(b""), "image: empty"),
    "not an image": (request(b"hello world"), "image: not an image Pillow can decode"),
    "truncated png": (request(png(np.random.default_rng(0).integers(0, 256, (20, 20, 3), np.uint8))[:300]), "image: "),
    "two images": ({"image": np.array([b"a", b"b"], dtype=object)}, "image: expected one element"),
    "huge image from its header": (request(png_header_only(200, 100)), "image: 200x100 = 20,000 pixels"),
    "empty vocabulary": ({**request(b"x"), "classes": np.array([], dtype=object)}, "classes: empty"),
    "oversized vocabulary": (request(b"x", [f"c{i}" for i in range(21)]), "classes: 21 names, more than"),
    "blank class": (request(b"x", ["sky", "  "]), "classes: class name #1"),
    "not utf-8": (request(b"x", [b"\xff\xfe"]), "classes: name #0 is not UTF-8"),
    "topk 0": (request(b"x", topk=0), "topk: must be between 1 and 16"),
    "topk 17": (request(b"x", topk=17), "topk: must be between 1 and 16"),
    "topk float": ({**request(b"x"), "topk": np.array([2.0], np.float32)}, "topk: expected one INT32"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_in_one_line_and_the_next_request_succeeds(handler, local, images, case):
    inputs, start = BAD[case]
    if "image" in inputs and inputs["image"][0] == b"x":  # the other input is at fault: send a good image
        inputs = {**inputs, "image": np.array([png(images[0])], dtype=object)}
    with pytest.raises(BadRequest) as caught:
        handler(inputs)
    message = str(caught.value)
    assert message.startswith(start) and "\n" not in message
    out = handler(request(png(images[1])))
    local.set_vocabulary(ARTIFACTS_VOCAB, show_progress=False)
    assert np.array_equal(out["labels"], local(images[1]).labels)


def test_the_pixel_bound_is_checked_before_decoding(handler):
    """The header alone decides: a 200x100 PNG with no pixel data is refused for its size (decoding it would
    have failed as truncated), with the one pixel budget every tool has (--max-pixels)."""
    with pytest.raises(BadRequest, match=r"^image: 200x100 = 20,000 pixels, more than the pixel budget of 10,000"):
        handler(request(png_header_only(200, 100)))


def test_interleaved_vocabularies_never_mix(handler, local, images):
    vocabularies = [["cat", "road", "sky"], None, ["person", "dog"], ["cat", "road", "sky"], None, ["tree"]]
    for step, names in enumerate(vocabularies):
        image = images[step % len(images)]
        out = handler(request(png(image), names, topk=2 if step % 2 else None))
        result = json.loads(out["result"][0])
        used = ARTIFACTS_VOCAB if names is None else names
        assert result["names"] == used and result["topk"] == (2 if step % 2 else 8)
        local.topk = 2 if step % 2 else 8
        local.set_vocabulary(used, show_progress=False)
        expected = local(image)
        assert out["labels"].dtype == np.int32 and out["labels"].flags.c_contiguous
        assert np.array_equal(out["labels"], expected.labels), f"step {step}: {names}"
        assert result["kept_per_stage"] == {f"decoder{i + 1}": len(k) for i, k in enumerate(expected.kept)}
    cache = handler.pipeline.cache
    assert cache.hits >= 1  # the second ["cat", "road", "sky"] was not encoded again


def test_result_json_has_what_sed_segment_writes(handler, images):
    result = json.loads(handler(request(png(images[0]), ["sky", "road"]))["result"][0])
    assert set(result) == {"backend", "topk", "vocabulary_size", "size", "classes", "kept_per_stage", "timings_ms",
                           "engines", "names", "name_changes", "weights"}
    assert result["size"] == list(images[0].shape[:2]) and result["weights"] == "random"
    repaired = json.loads(handler(request(png(images[0]), ["sky  blue", "road"]))["result"][0])
    assert repaired["names"] == ["sky blue", "road"] and len(repaired["name_changes"]) == 1


def test_the_cache_is_bounded_by_count_and_bytes():
    cache = VocabularyCache(max_entries=2, max_bytes=1000)
    block = np.zeros((10, 10), np.float32)  # 400 bytes
    cache.put("a", block)
    cache.put("b", block)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", block)
    assert cache.get("b") is None and cache.get("a") is not None and len(cache) == 2
    cache.put("d", np.zeros((10, 20), np.float32))  # 800 bytes: a and c leave to stay under 1000
    assert len(cache) == 1 and cache.nbytes == 800
    cache.put("e", np.zeros((30, 10), np.float32))  # 1200 bytes: larger than the bound alone, not kept
    assert cache.get("e") is None and cache.get("d") is not None
    with pytest.raises(ValueError):
        cache.get("d")[0, 0] = 1  # entries are read-only: a pipeline cannot change a shared one
