"""The sed-serve client (serve/client.py, on tritonclient's HTTP client) without a server: the request it
builds, the one line shown for an error answer, URL checks, refusals of local-only options, the
entry point sed-segment finds it by, and the process wrapper's early failure."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import tritonclient.http as http

from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.backends.options import BackendOptions, OrtOptions, TensorrtOptions
from sed_deploy.runtime.pipeline_args import PipelineSettings
from sed_deploy.runtime.segment_cli import main as segment_main
from sed_deploy.runtime.segment_cli import remote_pipeline_class
from sed_deploy.serve.client import RemotePipeline, SedClient, ServerError, not_for_a_server
from sed_deploy.serve.process import ServerProcess, free_ports
from sed_deploy.serve.protocol import error_line


def test_a_request_carries_the_file_bytes_classes_and_topk_as_binary_tensors():
    inputs = SedClient.inputs(b"\x89PNG...", ["sky", "tree, forest"], topk=3)
    body, length = http.InferenceServerClient.generate_request_body(inputs)
    header = json.loads(body[:length])
    assert [(i["name"], i["datatype"], i["shape"]) for i in header["inputs"]] == [
        ("image", "BYTES", [1]), ("classes", "BYTES", [2]), ("topk", "INT32", [1])]
    payload = body[length:]
    assert b"\x89PNG..." in payload and b"tree, forest" in payload
    assert np.frombuffer(payload[-4:], "<i4").tolist() == [3]
    assert [i.name() for i in SedClient.inputs(b"x")] == ["image"]


def test_the_error_line_of_an_answer():
    assert error_line(400, "topk: must be between 1 and 16, got 0") == "topk: must be between 1 and 16, got 0"
    traceback = "Failed ... Traceback (most recent call last):\n  File x\nValueError: boom\n"
    assert error_line(500, traceback) == "HTTP 500: ValueError: boom (the server's log has the details)"
    assert error_line(502, "") == "HTTP 502"


def test_urls_are_checked():
    assert SedClient("127.0.0.1:8000").url == "http://127.0.0.1:8000"
    secure = SedClient("https://example.org")
    assert (secure.endpoint, secure.ssl) == ("example.org:443", True)
    for bad in ("ftp://host:1", "http://", "http://host:port"):
        with pytest.raises(ConfigError, match="server URL"):
            SedClient(bad)


def test_an_unreachable_server_is_one_line():
    client = SedClient(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=5)
    with pytest.raises(ServerError, match="cannot reach the server at http://127.0.0.1:") as info:
        client.infer(b"x")
    assert "\n" not in str(info.value)
    with pytest.raises(ServerError, match="cannot reach the server"):
        client.ready()


def _settings(backend="auto", options=None, topk=None, cer=True) -> PipelineSettings:
    return PipelineSettings(backend, options or BackendOptions(), topk, cer, 1000)


@pytest.mark.parametrize("settings,flags", [
    (_settings(), []),
    (_settings(topk=3), []),  # sent with each request
    (_settings("tensorrt", TensorrtOptions(cuda_graphs=True)), ["--cuda-graphs"]),
    (_settings("tensorrt", TensorrtOptions(gpu_timing=True, cuda_graphs=True)), ["--cuda-graphs", "--gpu-timing"]),
    (_settings("ort", OrtOptions(providers=("cuda",))), ["--providers"]),
    (_settings(options=BackendOptions(precision="fp16", threads=2)), ["--precision", "--threads"]),
    (_settings("openvino"), ["--backend"]),
    (_settings(cer=False), ["--no-cer"]),
])
def test_what_only_a_local_pipeline_takes_is_named(settings, flags):
    assert not_for_a_server(settings) == flags


def test_sed_segment_server_refuses_local_options_in_one_line(tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"unused")
    url = f"http://127.0.0.1:{free_ports(1)[0]}"
    code = segment_main(["--server", url, "--cuda-graphs", "--vocab", "sky,road", str(image),
                         "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["error: --cuda-graphs does not apply to a server: sed-serve decides how its stages "
                                 "run (give it to sed-serve); only --topk is sent"]
    assert not (tmp_path / "o").exists()


def test_sed_segment_finds_the_client_through_its_entry_point(monkeypatch):
    assert remote_pipeline_class() is RemotePipeline
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [])
    with pytest.raises(Exception, match=r"pip install 'sed-deploy\[client\]'"):
        remote_pipeline_class()


def test_a_server_that_exits_early_fails_the_start_and_quotes_its_log(tmp_path):
    log = tmp_path / "logs" / "log"
    log.parent.mkdir()
    process = ServerProcess([sys.executable, "-c", "print('no such model'); raise SystemExit(3)"],
                            f"http://127.0.0.1:{free_ports(1)[0]}", log)
    with pytest.raises(ServerError, match="exited with code 3 before it was ready: no such model"):
        process.start(timeout=60)
    shutil.rmtree(log.parent)  # the message does not point into a folder its caller may remove
