"""One request of the `sed` model: inputs checked, the pipeline run, outputs built (no Triton here).

`RequestHandler` is what one model instance runs per request, whatever serves it: the PyTriton
server (`server.py`) and the Python-backend model of the Triton container (`bls/model.py`) both
call it with the request's tensors by name and send back what it returns. Everything a client can
get wrong becomes a `BadRequest` whose message is one line naming the input ("image: ...",
"classes: ...", "topk: ..."); the servers turn it into an error response (HTTP 400) and keep
serving. What one request may cost is bounded by `Limits`: image pixels, read from the image
header before anything is decoded (the pipeline's --max-pixels), and vocabulary size.

The protocol (KServe v2, `protocol` holds the names):
    image   BYTES [1]    the encoded image file (JPEG, PNG, ...)
    classes BYTES [N]    optional: class names, UTF-8 (absent: the server's vocabulary)
    topk    INT32 [1]    optional: k of category early rejection (absent: the artifacts' default)
    labels  INT32 [H,W]  class ids into the classes used, at the image's size
    result  BYTES [1]    JSON: what sed-segment writes per image (less "image"), plus "names" (the
                         classes used, after repair), "name_changes" and "weights"
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sed_deploy.core.errors import ImageError, SedDeployError, VocabularyError, first_line
from sed_deploy.runtime.decode import DEFAULT_MAX_PIXELS, load_image
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.serve.protocol import CLASSES, IMAGE, LABELS, RESULT, TOPK


class BadRequest(SedDeployError):
    """A request the server refuses: one line, starting with the input at fault."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field


@dataclass(frozen=True)
class Limits:
    """What one request may cost.

    Attributes:
        max_classes: most class names in `classes`.
        max_pixels: most pixels (width x height) of `image`, checked from its header before it is
            decoded: the same budget (--max-pixels) as every tool's.
    """

    max_classes: int = 1024
    max_pixels: int = DEFAULT_MAX_PIXELS


def _one_bytes(inputs: Mapping[str, np.ndarray], name: str) -> bytes | None:
    array = inputs.get(name)
    if array is None:
        return None
    flat = np.asarray(array).reshape(-1)
    if flat.size != 1:
        raise BadRequest(name, f"expected one element, got shape {list(np.shape(array))}")
    value = flat[0]
    return value if isinstance(value, bytes) else str(value).encode("utf-8")


def decode_classes(array: np.ndarray, limit: int) -> list[str]:
    """BYTES [N] class names -> str, within `limit` names."""
    flat = np.asarray(array).reshape(-1)
    if flat.size == 0:
        raise BadRequest(CLASSES, "empty; send at least one class name, or leave the input out for the "
                                  "server's vocabulary")
    if flat.size > limit:
        raise BadRequest(CLASSES, f"{flat.size} names, more than this server takes (--max-classes {limit})")
    names = []
    for index, value in enumerate(flat):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(CLASSES, f"name #{index} is not UTF-8 text") from None
        names.append(str(value))
    return names


class RequestHandler:
    """Runs requests on one `Pipeline` (one model instance; calls are never concurrent).

    Args:
        pipeline: loaded, with its text embeddings cache set to the server's `VocabularyCache`.
        default_names: the vocabulary of requests without `classes`.
        default_embeddings: its [T,P,D] text embeddings (encoded once at start), or None to encode
            them at the first request that uses them.
        limits: bounds on one request.
    """

    def __init__(self, pipeline: Pipeline, default_names: Sequence[str], default_embeddings: np.ndarray | None,
                 limits: Limits) -> None:
        self.pipeline = pipeline
        self.default_names = list(default_names)
        self.default_embeddings = default_embeddings
        self.limits = limits
        self.default_topk = pipeline.topk
        self._current: tuple[str, ...] | None = None  # the names as given of the vocabulary set now

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        rgb = self._image(inputs)
        names = decode_classes(inputs[CLASSES], self.limits.max_classes) if CLASSES in inputs else None
        self.pipeline.topk = self._topk(inputs)
        self._use_vocabulary(names)
        result = self.pipeline(rgb)
        summary = {
            "backend": self.pipeline.backend,
            "topk": self.pipeline.topk if self.pipeline.cer else None,
            "vocabulary_size": len(result.names),
            **result.summary(),
            "names": list(result.names),
            "name_changes": [str(change) for change in self.pipeline.name_changes],
            "weights": self.pipeline.manifest.weights.get("weights", "unknown"),
        }
        return {
            LABELS: np.ascontiguousarray(result.labels, dtype=np.int32),
            RESULT: np.array([json.dumps(summary, ensure_ascii=False).encode("utf-8")], dtype=np.object_),
        }

    def _image(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        data = _one_bytes(inputs, IMAGE)
        if data is None:
            raise BadRequest(IMAGE, "missing; send the encoded image file (BYTES, shape [1])")
        if not data:
            raise BadRequest(IMAGE, "empty (0 bytes)")
        try:
            return load_image(data, self.limits.max_pixels)
        except ImageError as exc:
            raise BadRequest(IMAGE, first_line(exc).removeprefix("image bytes: ")) from None

    def _topk(self, inputs: Mapping[str, np.ndarray]) -> int:
        array = inputs.get(TOPK)
        if array is None:
            return self.default_topk
        flat = np.asarray(array).reshape(-1)
        if flat.size != 1 or not np.issubdtype(flat.dtype, np.integer):
            raise BadRequest(TOPK, f"expected one INT32, got {flat.dtype} shape {list(np.shape(array))}")
        k, top = int(flat[0]), self.pipeline.manifest.topk
        if not 1 <= k <= top:
            raise BadRequest(TOPK, f"must be between 1 and {top} (the K these artifacts were exported with), got {k}")
        return k

    def _use_vocabulary(self, names: list[str] | None) -> None:
        given = tuple(self.default_names if names is None else names)
        if given == self._current:
            return
        self._current = None  # a failure below leaves the pipeline's vocabulary unknown
        try:
            if given == tuple(self.default_names):
                self.pipeline.set_vocabulary(self.default_names, embeddings=self.default_embeddings,
                                             show_progress=False)
                self.default_embeddings = self.pipeline.text
            else:
                self.pipeline.set_vocabulary(names, show_progress=False)
        except VocabularyError as exc:
            raise BadRequest(CLASSES, first_line(exc)) from None
        self._current = given
