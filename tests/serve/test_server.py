"""sed-serve for real: a Triton server on free loopback ports, started once for this module and
stopped by SIGTERM in the last test. Responses equal the local Pipeline bit for bit; each kind of
bad request gets HTTP 400 with one line and the next request succeeds; vocabularies sent
concurrently never mix; sed-segment --server writes what sed-segment writes locally; nothing
outlives the server."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.segment_cli import main as segment_main
from sed_deploy.serve.client import SedClient, ServerError
from sed_deploy.serve.process import ServerProcess, free_ports
from tests.conftest import ARTIFACTS_VOCAB

pytest.importorskip("pytriton", reason="sed-serve needs the serve extra: pip install 'sed-deploy[serve]'")

START_TIMEOUT_S = 180  # about 10 s on an idle 2-core machine, much more when it is loaded
STOP_TIMEOUT_S = 90  # Triton waits up to 30 s for models to unload


def group_members(group: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getpgid(int(entry)) == group:
                    members.append(int(entry))
            except (ProcessLookupError, PermissionError):
                pass
    return members


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def post(url: str, body: bytes, header_length: int) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(header_length)})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tiny_artifacts, tmp_path_factory):
    folder, _ = tiny_artifacts
    tmp = tmp_path_factory.mktemp("serve")
    http, grpc, metrics = free_ports(3)
    command = [sys.executable, "-m", "sed_deploy.serve.cli", "--artifacts", str(folder),
               "--vocab", str(folder.parent / "street.txt"), "--backend", "ort", "--instances", "2", "--threads", "1",
               "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
               "--max-classes", "20", "--max-pixels", "1000000", "--workspace", str(tmp / "workspace"),
               "--log-file", str(tmp / "triton.log"), "-q"]
    process = ServerProcess(command, f"http://127.0.0.1:{http}", tmp / "server.log")
    try:
        process.start(START_TIMEOUT_S, env={**os.environ, "SED_DEPLOY_CACHE": str(tmp / "cache")})
    except ServerError as exc:
        pytest.fail(f"{exc}:\n{process.log.read_text()[-3000:]}")
    with process:  # stopped at the end, whatever failed (the last test stops it itself)
        yield {"url": process.client.url, "grpc": f"127.0.0.1:{grpc}", "metrics": f"http://127.0.0.1:{metrics}",
               "process": process.process, "log": process.log, "workspace": tmp / "workspace"}


@pytest.fixture(scope="module")
def local(tiny_artifacts):
    folder, _ = tiny_artifacts
    with Pipeline.from_artifacts(folder, backend="ort", options=BackendOptions(threads=1)) as pipeline:
        yield pipeline


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (31 + 9 * i, 45 + 5 * i, 3), dtype=np.uint8) for i in range(4)]


def local_labels(local: Pipeline, image: np.ndarray, names, topk: int = 8) -> np.ndarray:
    local.topk = topk
    local.set_vocabulary(names, show_progress=False)
    return local(image).labels


def test_health_metadata_and_metrics(server):
    assert http_status(f"{server['url']}/v2/health/live") == 200
    assert http_status(f"{server['url']}/v2/models/sed/ready") == 200
    with urllib.request.urlopen(f"{server['url']}/v2/models/sed", timeout=10) as answer:
        metadata = json.load(answer)
    shapes = {t["name"]: (t["datatype"], t["shape"]) for t in metadata["inputs"] + metadata["outputs"]}
    assert shapes == {"image": ("BYTES", [1]), "classes": ("BYTES", [-1]), "topk": ("INT32", [1]),
                      "labels": ("INT32", [-1, -1]), "result": ("BYTES", [1])}
    with urllib.request.urlopen(f"{server['metrics']}/metrics", timeout=10) as answer:
        assert 'nv_inference_request_success{model="sed",version="1"}' in answer.read().decode()


def test_responses_equal_the_local_pipeline_bit_for_bit(server, local, images):
    client = SedClient(server["url"])
    default = client.segment(png(images[0]))
    assert default.names == ARTIFACTS_VOCAB
    assert np.array_equal(default.labels, local_labels(local, images[0], ARTIFACTS_VOCAB))
    custom = client.segment(png(images[1]), ["cat", "grass", "sky"], topk=2)
    assert custom.labels.dtype == np.int32 and custom.labels.shape == images[1].shape[:2]
    assert np.array_equal(custom.labels, local_labels(local, images[1], ["cat", "grass", "sky"], topk=2))
    assert custom.topk == 2 and custom.backend == "ort"


def _raw(image: bytes | None = None, classes=None, topk=None, empty_classes: bool = False):
    """A request built by hand, as any KServe v2 client could send it."""
    if image is None:  # no image at all: only topk, inline JSON
        header = json.dumps({"inputs": [{"name": "topk", "datatype": "INT32", "shape": [1], "data": [3]}]}).encode()
        return header, len(header)
    if empty_classes:
        header = json.dumps({"inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 4 + len(image)}},
            {"name": "classes", "datatype": "BYTES", "shape": [0], "parameters": {"binary_data_size": 0}}]}).encode()
        return header + len(image).to_bytes(4, "little") + image, len(header)
    import tritonclient.http

    return tritonclient.http.InferenceServerClient.generate_request_body(SedClient.inputs(image, classes, topk))


def test_each_bad_request_gets_one_line_and_the_next_succeeds(server, local, images):
    good = png(images[2])
    big = io.BytesIO()
    Image.new("RGB", (1200, 1000)).save(big, format="PNG")
    cases = {
        "undecodable image": (_raw(b"GIF89a but not really"), "image: not an image Pillow can decode"),
        "empty image": (_raw(b""), "image: empty (0 bytes)"),
        "missing image": (_raw(None), "image: missing"),
        "empty vocabulary": (_raw(good, empty_classes=True), "classes: empty (shape [0])"),
        "oversized vocabulary": (_raw(good, [f"class {i}" for i in range(21)]), "classes: 21 names, more than"),
        "blank class name": (_raw(good, ["sky", " "]), "classes: class name #1"),
        "huge image": (_raw(big.getvalue()), "image: 1200x1000 = 1,200,000 pixels, more than the pixel budget"),
        "topk 0": (_raw(good, topk=0), "topk: must be between 1 and 16"),
        "topk 99": (_raw(good, topk=99), "topk: must be between 1 and 16"),
    }
    expected = local_labels(local, images[3], ARTIFACTS_VOCAB)
    for case, ((body, header_length), start) in cases.items():
        status, answer = post(f"{server['url']}/v2/models/sed/infer", body, header_length)
        message = json.loads(answer)["error"]
        assert status == 400 and message.startswith(start) and "\n" not in message, (case, status, message)
        assert np.array_equal(SedClient(server["url"]).segment(png(images[3])).labels, expected), case


def test_grpc_refusals_are_one_line_too(server, images):
    grpc = pytest.importorskip("tritonclient.grpc")
    from tritonclient.utils import InferenceServerException

    client = grpc.InferenceServerClient(server["grpc"])
    try:
        image = grpc.InferInput("image", [1], "BYTES")
        image.set_data_from_numpy(np.array([b"not an image"], dtype=object))
        with pytest.raises(InferenceServerException) as caught:
            client.infer("sed", [image])
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert caught.value.message() == "image: not an image Pillow can decode (corrupt, empty or another format)"
        image.set_data_from_numpy(np.array([png(images[0])], dtype=object))
        assert client.infer("sed", [image]).as_numpy("labels").shape == images[0].shape[:2]
    finally:
        client.close()


def test_interleaved_vocabularies_from_concurrent_clients_never_mix(server, local, images):
    vocabularies = [["cat", "road", "sky"], ["person", "dog", "tree"], None, ["water", "boat"]]
    expected = {(v, i): local_labels(local, images[i], ARTIFACTS_VOCAB if v is None else list(v))
                for v in map(lambda x: tuple(x) if x else None, vocabularies) for i in range(len(images))}
    failures: list[str] = []

    def client_loop(names):
        client = SedClient(server["url"])
        for step in range(6):
            index = step % len(images)
            result = client.segment(png(images[index]), names)
            key = (tuple(names) if names else None, index)
            if result.names != (names or ARTIFACTS_VOCAB) or not np.array_equal(result.labels, expected[key]):
                failures.append(f"{names} image {index}")

    threads = [threading.Thread(target=client_loop, args=(names,)) for names in vocabularies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert failures == []


def test_sed_segment_server_writes_what_it_writes_locally(server, tiny_artifacts, images, tmp_path, capsys):
    folder, _ = tiny_artifacts
    paths = []
    for i, image in enumerate(images[:2]):
        paths.append(tmp_path / f"photo{i}.jpg")
        Image.fromarray(image).save(paths[-1], quality=90)
    vocab = "cat,road,sky,tree, forest"
    common = ["--vocab", vocab, *map(str, paths), "-q", "--topk", "4"]
    assert segment_main(["--artifacts", str(folder), "--backend", "ort", "--threads", "1", *common,
                         "-o", str(tmp_path / "local")]) == 0
    assert segment_main(["--server", server["url"], *common, "-o", str(tmp_path / "remote")]) == 0
    local_files = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert local_files == sorted(p.name for p in (tmp_path / "remote").iterdir()) and len(local_files) == 6
    for name in local_files:
        here, there = (tmp_path / "local" / name).read_bytes(), (tmp_path / "remote" / name).read_bytes()
        if name.endswith(".png"):
            assert here == there, name  # label maps and overlays byte for byte
        else:
            here, there = json.loads(here), json.loads(there)
            assert list(here) == list(there)
            assert {k: v for k, v in here.items() if k != "timings_ms"} == \
                   {k: v for k, v in there.items() if k != "timings_ms"}
    assert "RANDOM weights" in capsys.readouterr().err


def test_sed_segment_server_errors_are_one_line(server, images, tmp_path, capsys):
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    code = segment_main(["--server", server["url"], "--vocab", "sky,road", str(tmp_path / "a.png"), "-o",
                         str(tmp_path / "out"), "--topk", "40", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert "error: the server refused the request: topk: must be between 1 and 16" in err
    code = segment_main(["--server", server["url"], "--vocab", "sky,road", "--backend", "ort", str(tmp_path / "a.png"),
                         "-o", str(tmp_path / "out"), "-q"])
    assert code == 1 and "--backend does not apply to a server" in capsys.readouterr().err
    dead = f"http://127.0.0.1:{free_ports(1)[0]}"
    code = segment_main(["--server", dead, "--vocab", "sky,road", str(tmp_path / "a.png"), "-o", str(tmp_path / "out")])
    assert code == 1 and "cannot reach the server" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_the_server_and_everything_it_started(server):
    """Last test of the module: it stops the shared server."""
    process = server["process"]
    members = [p for p in group_members(process.pid) if p != process.pid]
    commands = [Path(f"/proc/{p}/cmdline").read_bytes() for p in members]
    assert any(b"tritonserver" in c for c in commands)
    assert sum(b"triton_python_backend_stub" in c for c in commands) == 2  # one per instance
    process.send_signal(signal.SIGTERM)
    assert process.wait(STOP_TIMEOUT_S) == 0
    deadline = time.monotonic() + 15  # PyTriton's tensor-store process exits a moment after the server
    while (left := group_members(process.pid)) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert left == [], [Path(f"/proc/{p}/cmdline").read_bytes()[:80] for p in left]
    assert "sed-serve: stopped" in server["log"].read_text()
    assert not server["workspace"].exists()
