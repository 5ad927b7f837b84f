"""A client of `sed-serve` (KServe v2 over HTTP), torch-free and tritonclient-free: the protocol's
names, one request per image, and `RemotePipeline`, which `sed-segment --server` uses in place of a
local `Pipeline`.

The server (`sed_deploy.serve`, a layer above) answers model `sed`:
    inputs   image   BYTES [1]    the encoded image file (JPEG, PNG, ...)
             classes BYTES [N]    optional: class names (absent: the server's vocabulary)
             topk    INT32 [1]    optional: k of category early rejection
    outputs  labels  INT32 [H,W]  class ids into the classes used, at the image's size
             result  BYTES [1]    JSON: what sed-segment writes per image (less "image"), plus
                                  "names", "name_changes" and "weights"

Requests use KServe's binary tensor extension (a JSON header, then the raw tensors): a BYTES
element is a 4-byte little-endian length and the bytes, an INT32 tensor its little-endian values;
the header's length goes in the `Inference-Header-Content-Length` header. Only urllib is needed.
A refused request comes back as HTTP 400 with {"error": "<one line>"}; that line is raised as
`ServerError` (`ImageError` when it is about the image, so a caller can skip that image).
`ServerProcess` starts a server as a subprocess and stops it (the demo, the load test, the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from sed_deploy.core.errors import ConfigError, ImageError, SedDeployError

from .name_repair import NameChange, normalize_names
from .visualize import class_shares

MODEL = "sed"
IMAGE, CLASSES, TOPK = "image", "classes", "topk"
LABELS, RESULT = "labels", "result"
HEADER_LENGTH = "Inference-Header-Content-Length"
DEFAULT_TIMEOUT_S = 600.0  # SED-B on a CPU takes seconds to tens of seconds per image


class ServerError(SedDeployError):
    """The server refused a request or cannot be reached; one line."""


def _bytes_tensor(items: Sequence[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def _split_bytes_tensor(blob: bytes) -> list[bytes]:
    items, offset = [], 0
    while offset < len(blob):
        (size,) = struct.unpack_from("<I", blob, offset)
        items.append(blob[offset + 4: offset + 4 + size])
        offset += 4 + size
    return items


def encode_request(image: bytes, classes: Sequence[str] | None = None, topk: int | None = None) -> tuple[bytes, int]:
    """The body of an infer request and the length of its JSON header."""
    tensors = [(IMAGE, "BYTES", [1], _bytes_tensor([image]))]
    if classes is not None:
        tensors.append((CLASSES, "BYTES", [len(classes)], _bytes_tensor([c.encode("utf-8") for c in classes])))
    if topk is not None:
        tensors.append((TOPK, "INT32", [1], struct.pack("<i", topk)))
    header = {
        "inputs": [{"name": name, "datatype": dtype, "shape": shape, "parameters": {"binary_data_size": len(blob)}}
                   for name, dtype, shape, blob in tensors],
        "outputs": [{"name": LABELS, "parameters": {"binary_data": True}},
                    {"name": RESULT, "parameters": {"binary_data": True}}],
    }
    head = json.dumps(header).encode("utf-8")
    return head + b"".join(blob for *_, blob in tensors), len(head)


def decode_response(body: bytes, header_length: int | None) -> dict[str, Any]:
    """Outputs by name: `labels` as an int32 array, `result` as the parsed JSON."""
    head = json.loads(body[:header_length] if header_length else body)
    payload = body[header_length:] if header_length else b""
    outputs: dict[str, Any] = {}
    offset = 0
    for output in head.get("outputs", []):
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            data = output.get("data")
            raw = np.asarray(data, dtype=object if output["datatype"] == "BYTES" else None)
        else:
            blob = payload[offset: offset + size]
            offset += size
            if output["datatype"] == "BYTES":
                raw = np.array(_split_bytes_tensor(blob), dtype=object)
            elif output["datatype"] == "INT32":
                raw = np.frombuffer(blob, dtype="<i4").astype(np.int32)
            else:
                raise ServerError(f"unexpected output {output['name']} of type {output['datatype']}")
        outputs[output["name"]] = raw.reshape(output["shape"])
    if LABELS not in outputs or RESULT not in outputs:
        raise ServerError(f"the server's answer lacks {LABELS} or {RESULT} (got {sorted(outputs)}): is it sed-serve?")
    result = outputs[RESULT].reshape(-1)[0]
    text = result.decode("utf-8") if isinstance(result, bytes) else result
    return {LABELS: outputs[LABELS], RESULT: json.loads(text)}


def error_line(status: int, body: bytes) -> str:
    """The one line to show for an HTTP error answer (Triton's body is {"error": "..."})."""
    try:
        message = str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace")
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if not lines:
        return f"HTTP {status}"
    if len(lines) == 1:
        return lines[0]
    # not a request the server refused but a failure inside it: its traceback ends with the exception
    return f"HTTP {status}: {lines[-1]} (the server's log has the details)"


@dataclass
class RemoteSegmentation:
    """A server's answer for one image, with what sed-segment uses of a `Segmentation`.

    Attributes:
        labels: [H,W] int32 class ids into `names`.
        names: the classes used (after the server's name repair).
        info: the server's `result` JSON.
    """

    labels: np.ndarray
    names: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per step, as the server measured them."""
        return {k: v / 1000 for k, v in self.info.get("timings_ms", {}).items()}

    def shares(self) -> list[tuple[int, float]]:
        return class_shares(self.labels, len(self.names))

    def summary(self) -> dict[str, Any]:
        """The keys `Segmentation.summary` has, with the server's values."""
        return {key: self.info[key] for key in ("size", "classes", "kept_per_stage", "timings_ms", "engines")}


class SedClient:
    """Requests to the `sed` model of a server.

    Args:
        url: the server's HTTP endpoint, e.g. http://127.0.0.1:8000.
        timeout: seconds to wait for one answer.
    """

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT_S, model: str = MODEL) -> None:
        if "://" not in url:
            url = f"http://{url}"
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"server URL must look like http://host:8000, got {url!r}")
        self.url = url.rstrip("/")
        self.model = model
        self.timeout = timeout

    def _open(self, request: urllib.request.Request) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach the server at {self.url} ({reason}); is sed-serve running there?") \
                from None

    def ready(self) -> bool:
        """True when the server answers and model `sed` is loaded."""
        status, _, _ = self._open(urllib.request.Request(f"{self.url}/v2/models/{self.model}/ready"))
        return status == 200

    def check_ready(self) -> None:
        if not self.ready():
            raise ServerError(f"the server at {self.url} answers but model {self.model!r} is not ready; "
                              "wait for sed-serve to finish loading, or check the model name")

    def infer(self, image: bytes, classes: Sequence[str] | None = None, topk: int | None = None) -> dict[str, Any]:
        """One request: the encoded image file, optional classes and top-k -> {labels, result}."""
        body, header_length = encode_request(image, classes, topk)
        request = urllib.request.Request(
            f"{self.url}/v2/models/{self.model}/infer", data=body, method="POST",
            headers={"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)})
        status, headers, answer = self._open(request)
        if status != 200:
            line = error_line(status, answer)
            if line.startswith(f"{IMAGE}:"):
                raise ImageError(line)
            raise ServerError(f"the server refused the request: {line}" if status == 400 else f"server error: {line}")
        length = {k.lower(): v for k, v in headers.items()}.get(HEADER_LENGTH.lower())
        return decode_response(answer, int(length) if length else None)

    def segment(self, image: bytes, classes: Sequence[str] | None = None,
                topk: int | None = None) -> RemoteSegmentation:
        outputs = self.infer(image, classes, topk)
        info = outputs[RESULT]
        return RemoteSegmentation(labels=outputs[LABELS], names=list(info["names"]), info=info)


def encode_png(rgb: np.ndarray) -> bytes:
    """A decoded image as PNG (lossless: the server decodes exactly these pixels)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class RemotePipeline:
    """What `sed-segment` uses of a `Pipeline`, answered by a server.

    The vocabulary is repaired here as a local pipeline would (the server repairs it the same way
    and gets nothing left to change); every image is sent as PNG of the pixels decoded here, so the
    server segments exactly what a local pipeline would.
    """

    def __init__(self, client: SedClient, topk: int | None = None) -> None:
        self.client = client
        self.requested_topk = topk
        self.names: list[str] | None = None
        self.name_changes: list[NameChange] = []
        self.backend = "server"
        self.topk: int | None = topk
        self._warned = False

    @classmethod
    def connect(cls, url: str, topk: int | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> RemotePipeline:
        client = SedClient(url, timeout=timeout)
        client.check_ready()
        return cls(client, topk)

    @classmethod
    def for_cli(cls, args: argparse.Namespace) -> RemotePipeline:
        """sed-segment's --server; the pipeline options other than --topk belong to sed-serve."""
        local = [f"--{name}" for name, default in (("backend", "auto"), ("precision", None), ("threads", None),
                                                    ("providers", None), ("device", "cpu"), ("cer", True))
                 if getattr(args, name) != default]
        if local:
            raise ConfigError(f"{', '.join(local)} set how a local pipeline runs; with --server the server decides "
                              "(give them to sed-serve), only --topk is sent")
        return cls.connect(args.server, topk=args.topk)

    def set_vocabulary(self, names: Sequence[str], show_progress: bool = True) -> None:
        self.names, self.name_changes = normalize_names(names)

    def __call__(self, rgb: np.ndarray) -> RemoteSegmentation:
        if self.names is None:
            raise ConfigError("no vocabulary set: call set_vocabulary(names) before segmenting")
        result = self.client.segment(encode_png(rgb), self.names, self.requested_topk)
        if result.names != self.names:
            raise ServerError(f"the server used other class names than sent ({result.names[:3]} ...); "
                              "is it running another sed-deploy version?")
        self.backend = result.info.get("backend", "server")
        self.topk = result.info.get("topk")
        if result.info.get("weights") == "random" and not self._warned:
            print("WARNING: the server's artifacts have RANDOM weights: the masks are meaningless", file=sys.stderr)
            self._warned = True
        return result

    def close(self) -> None:
        pass


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """`count` TCP ports free on `host` now (bound, read, released)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ServerProcess:
    """A server started as a subprocess in its own process group, stopped as Kubernetes stops one.

    `start` waits until model `sed` is ready (failing early if the process exits); `stop` sends
    SIGTERM, waits, and kills whatever of the group is left. Output goes to `log` (a file: a server
    writing into an unread pipe blocks).

    Args:
        command: the server's command line (for sed-serve: ... --http-port PORT).
        url: its HTTP endpoint.
        log: file for its output.
    """

    def __init__(self, command: Sequence[str], url: str, log: str | Path) -> None:
        self.command = list(command)
        self.client = SedClient(url, timeout=10)
        self.log = Path(log)
        self.process: subprocess.Popen | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = 300.0, env: dict[str, str] | None = None) -> ServerProcess:
        with open(self.log, "w") as output:
            self.process = subprocess.Popen(self.command, stdout=output, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=True)
        started = time.monotonic()
        while True:
            with contextlib.suppress(ServerError):
                if self.client.ready():
                    break
            if self.process.poll() is not None:
                self.stop()
                raise ServerError(f"the server exited with code {self.process.returncode} before it was ready; "
                                  f"its output is in {self.log}")
            if time.monotonic() - started > timeout:
                self.stop()
                raise ServerError(f"the server was not ready after {timeout:.0f} s; its output is in {self.log}")
            time.sleep(0.25)
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 90.0) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL to what is left of the group; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.poll()

    def __enter__(self) -> ServerProcess:
        return self if self.process is not None else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
