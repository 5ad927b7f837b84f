"""The client of `sed-serve`: `SedClient` (requests on tritonclient's HTTP client) and `RemotePipeline`,
what `sed-segment --server` runs in place of a local `Pipeline`.

`RemotePipeline` registers itself in the `sed_deploy.remote` entry-point group, so sed-segment (in
the runtime, a layer below) finds it without importing this package; an install without
tritonclient (the edge profile) still runs sed-segment locally and says what to install for
--server. Each image goes to the server as the file's own bytes: the server decodes it exactly as
a local pipeline would (the same decoder), and only the label map and a JSON summary come back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sed_deploy.core.errors import ConfigError, ImageError, SedDeployError, first_line
from sed_deploy.core.optional import require
from sed_deploy.runtime.decode import EncodedImage, open_regular_file
from sed_deploy.runtime.name_repair import NameChange, normalize_names
from sed_deploy.runtime.pipeline_args import PipelineSettings, flag_name
from sed_deploy.runtime.segmentation import Segmentation

from .protocol import CLASSES, IMAGE, LABELS, MODEL, RESULT, TOPK, error_line

DEFAULT_TIMEOUT_S = 600.0  # SED-B on a CPU takes seconds to tens of seconds per image


class ServerError(SedDeployError):
    """The server refused a request or cannot be reached; one line."""


def _endpoint(url: str) -> tuple[str, bool]:
    """("host:port[/base]", https?) of a server URL ("http://h:8000", "https://h", "h:8000")."""
    text = url if "://" in url else f"http://{url}"
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"server URL must look like http://host:8000, got {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError(f"server URL has a bad port: {url!r}") from None
    return f"{parts.hostname}:{port}{parts.path.rstrip('/')}", parts.scheme == "https"


class SedClient:
    """Requests to the `sed` model of a server; safe to share between threads (one connection each).

    Args:
        url: the server's HTTP endpoint, e.g. http://127.0.0.1:8000.
        timeout: seconds to wait for one answer.
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, model: str = MODEL) -> None:
        self.endpoint, self.ssl = _endpoint(url)
        self.url = f"{'https' if self.ssl else 'http'}://{self.endpoint}"
        self.model = model
        self.timeout = timeout
        self._local = threading.local()

    @property
    def _http(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            http = require("tritonclient.http", "sed-segment --server and the sed-serve client")
            client = http.InferenceServerClient(self.endpoint, ssl=self.ssl, connection_timeout=self.timeout,
                                                network_timeout=self.timeout)
            self._local.client = client
        return client

    def _unreachable(self, exc: BaseException) -> ServerError:
        return ServerError(f"cannot reach the server at {self.url} ({first_line(exc)}); is sed-serve running there?")

    def ready(self) -> bool:
        """True when the server answers and model `sed` is loaded."""
        utils = require("tritonclient.utils")
        try:
            return bool(self._http.is_model_ready(self.model))
        except utils.InferenceServerException:
            return False
        except OSError as exc:
            raise self._unreachable(exc) from None

    def check_ready(self) -> None:
        if not self.ready():
            raise ServerError(f"the server at {self.url} answers but model {self.model!r} is not ready; "
                              "wait for sed-serve to finish loading, or check the model name")

    @staticmethod
    def inputs(image: bytes, classes: Sequence[str] | None = None, topk: int | None = None) -> list[Any]:
        """The request's tensors: the encoded image file, optional classes and top-k."""
        http = require("tritonclient.http", "sed-segment --server and the sed-serve client")
        tensors = []
        for name, dtype, array in (
            (IMAGE, "BYTES", np.array([bytes(image)], dtype=np.object_)),
            (CLASSES, "BYTES", None if classes is None else np.array([c.encode() for c in classes], np.object_)),
            (TOPK, "INT32", None if topk is None else np.array([topk], dtype=np.int32)),
        ):
            if array is not None:
                tensor = http.InferInput(name, list(array.shape), dtype)
                tensor.set_data_from_numpy(array, binary_data=True)
                tensors.append(tensor)
        return tensors

    def infer(self, image: bytes, classes: Sequence[str] | None = None, topk: int | None = None) -> dict[str, Any]:
        """One request -> {labels: [H,W] int32, result: the parsed JSON}."""
        http, utils = require("tritonclient.http"), require("tritonclient.utils")
        outputs = [http.InferRequestedOutput(LABELS, binary_data=True),
                   http.InferRequestedOutput(RESULT, binary_data=True)]
        try:
            answer = self._http.infer(self.model, self.inputs(image, classes, topk), outputs=outputs)
        except utils.InferenceServerException as exc:
            line = error_line(exc.status() or "error", exc.message() or str(exc))
            if line.startswith(f"{IMAGE}:"):
                raise ImageError(line) from None
            refused = str(exc.status()) == "400"
            raise ServerError(f"the server refused the request: {line}" if refused else f"server error: {line}") \
                from None
        except OSError as exc:
            raise self._unreachable(exc) from None
        labels, result = answer.as_numpy(LABELS), answer.as_numpy(RESULT)
        if labels is None or result is None:
            raise ServerError(f"the server's answer lacks {LABELS} or {RESULT}: is it sed-serve?")
        text = result.reshape(-1)[0]
        return {LABELS: labels.astype(np.int32, copy=False),
                RESULT: json.loads(text.decode() if isinstance(text, bytes) else text)}

    def segment(self, image: bytes, classes: Sequence[str] | None = None, topk: int | None = None) -> Segmentation:
        return segmentation_from_answer(self.infer(image, classes, topk))

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
            self._local.client = None


def not_for_a_server(settings: PipelineSettings) -> list[str]:
    """The flags of `settings` that set how a local pipeline runs (a server decides those itself)."""
    options = settings.options
    flags = [flag_name(name) for name in options.changed()]
    flags += ["--precision"] * (options.precision is not None) + ["--threads"] * (options.threads is not None)
    if settings.backend != "auto" and not flags:
        flags.append("--backend")
    return flags + ["--no-cer"] * (not settings.cer)


def segmentation_from_answer(outputs: dict[str, Any]) -> Segmentation:
    """A server's answer as the `Segmentation` a local pipeline returns (without kept ids and scores)."""
    info = outputs[RESULT]
    return Segmentation(labels=outputs[LABELS], names=list(info["names"]),
                        timings={k: v / 1000 for k, v in info.get("timings_ms", {}).items()},
                        engines=dict(info.get("engines", {})), backend=str(info.get("backend", "server")),
                        topk=info.get("topk"), kept_counts=dict(info.get("kept_per_stage", {})))


class RemotePipeline:
    """What `sed-segment` uses of a `Pipeline`, answered by a server.

    The vocabulary is repaired here as a local pipeline would (the server repairs it the same way
    and gets nothing left to change); each image is sent as its file's bytes.

    Args:
        client: the server's client.
        topk: k of category early rejection to ask for (None: the server's default).
    """

    def __init__(self, client: SedClient, topk: int | None = None) -> None:
        self.client = client
        self.requested_topk = topk
        self.names: list[str] | None = None
        self.name_changes: list[NameChange] = []
        self.backend = "server"
        self.topk: int | None = topk
        self.weights = "unknown"  # known from the first answer

    @classmethod
    def connect(cls, url: str, topk: int | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                settings: PipelineSettings | None = None) -> RemotePipeline:
        """A pipeline on the server at `url`; `settings` (sed-segment's pipeline options) may hold only what a
        server request carries (--topk) or what is done here (--max-pixels): the rest is refused in one line."""
        if settings is not None:
            refused = not_for_a_server(settings)
            if refused:
                one = len(refused) == 1
                raise ConfigError(f"{', '.join(refused)} {'does' if one else 'do'} not apply to a server: sed-serve "
                                  f"decides how its stages run (give {'it' if one else 'them'} to sed-serve); only "
                                  "--topk is sent")
            topk = settings.topk if topk is None else topk
        client = SedClient(url, timeout=timeout)
        client.check_ready()
        return cls(client, topk)

    def set_vocabulary(self, names: Sequence[str], show_progress: bool = True) -> None:
        self.names, self.name_changes = normalize_names(names)

    def __call__(self, image: EncodedImage | str | Path | bytes) -> Segmentation:
        """Segment one image file: read once (`decode.read_image_file`), its path, or its encoded bytes."""
        if self.names is None:
            raise ConfigError("no vocabulary set: call set_vocabulary(names) before segmenting")
        if isinstance(image, EncodedImage):
            data = image.data
        elif isinstance(image, bytes):
            data = image
        elif isinstance(image, str | Path):
            with open_regular_file(image) as f:
                data = f.read()
        else:
            raise ImageError(f"a server is sent the image file: give its path or bytes, got {type(image).__name__}")
        outputs = self.client.infer(data, self.names, self.requested_topk)
        self.weights = str(outputs[RESULT].get("weights", "unknown"))
        result = segmentation_from_answer(outputs)
        if result.names != self.names:
            raise ServerError(f"the server used other class names than sent ({result.names[:3]} ...); "
                              "is it running another sed-deploy version?")
        self.backend, self.topk = result.backend, result.topk
        return result

    def close(self) -> None:
        self.client.close()
