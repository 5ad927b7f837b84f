"""The KServe v2 client of runtime/remote.py without a server: the binary tensor format both ways,
the one line shown for an error answer, URL checks, and the process wrapper's early failure."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest

from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime.remote import (
    HEADER_LENGTH,
    SedClient,
    ServerError,
    ServerProcess,
    decode_response,
    encode_request,
    error_line,
    free_ports,
)


def test_a_request_is_a_json_header_then_the_raw_tensors():
    body, length = encode_request(b"\x89PNG...", ["sky", "tree, forest"], topk=3)
    header = json.loads(body[:length])
    assert [(i["name"], i["datatype"], i["shape"]) for i in header["inputs"]] == [
        ("image", "BYTES", [1]), ("classes", "BYTES", [2]), ("topk", "INT32", [1])]
    payload = body[length:]
    sizes = [i["parameters"]["binary_data_size"] for i in header["inputs"]]
    assert sum(sizes) == len(payload)
    image, classes, topk = payload[: sizes[0]], payload[sizes[0]: sizes[0] + sizes[1]], payload[-sizes[2]:]
    assert image == struct.pack("<I", 7) + b"\x89PNG..."
    assert classes == struct.pack("<I", 3) + b"sky" + struct.pack("<I", 12) + b"tree, forest"
    assert struct.unpack("<i", topk) == (3,)
    assert all(o["parameters"]["binary_data"] for o in header["outputs"])
    body, length = encode_request(b"x")
    assert [i["name"] for i in json.loads(body[:length])["inputs"]] == ["image"]


def test_a_binary_answer_is_decoded():
    labels = np.arange(6, dtype="<i4").reshape(2, 3)
    result = json.dumps({"names": ["a"]}).encode()
    blobs = [labels.tobytes(), struct.pack("<I", len(result)) + result]
    header = json.dumps({"outputs": [
        {"name": "labels", "datatype": "INT32", "shape": [2, 3], "parameters": {"binary_data_size": len(blobs[0])}},
        {"name": "result", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(blobs[1])}},
    ]}).encode()
    outputs = decode_response(header + b"".join(blobs), len(header))
    assert np.array_equal(outputs["labels"], labels) and outputs["labels"].dtype == np.int32
    assert outputs["result"] == {"names": ["a"]}
    plain = json.dumps({"outputs": [{"name": "labels", "datatype": "INT32", "shape": [1, 2], "data": [4, 5]},
                                    {"name": "result", "datatype": "BYTES", "shape": [1], "data": ['{"x": 1}']}]})
    outputs = decode_response(plain.encode(), None)
    assert outputs["labels"].tolist() == [[4, 5]] and outputs["result"] == {"x": 1}
    with pytest.raises(ServerError, match="lacks labels or result"):
        decode_response(json.dumps({"outputs": []}).encode(), None)
    assert HEADER_LENGTH == "Inference-Header-Content-Length"


def test_the_error_line_of_an_answer():
    assert error_line(400, b'{"error":"topk: must be between 1 and 16, got 0"}') == \
        "topk: must be between 1 and 16, got 0"
    traceback = json.dumps({"error": "Failed ... Traceback (most recent call last):\n  File x\nValueError: boom\n"})
    assert error_line(500, traceback.encode()) == "HTTP 500: ValueError: boom (the server's log has the details)"
    assert error_line(502, b"") == "HTTP 502"
    assert error_line(503, b"<html>busy</html>") == "<html>busy</html>"


def test_urls_are_checked():
    assert SedClient("127.0.0.1:8000").url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigError, match="server URL must look like"):
        SedClient("ftp://host:1")


def test_an_unreachable_server_is_one_line():
    client = SedClient(f"http://127.0.0.1:{free_ports(1)[0]}", timeout=5)
    with pytest.raises(ServerError, match="cannot reach the server at http://127.0.0.1:"):
        client.infer(b"x")


def test_a_server_that_exits_early_fails_the_start(tmp_path):
    process = ServerProcess([sys.executable, "-c", "print('no such model'); raise SystemExit(3)"],
                            f"http://127.0.0.1:{free_ports(1)[0]}", tmp_path / "log")
    with pytest.raises(ServerError, match="exited with code 3 before it was ready"):
        process.start(timeout=60)
    assert "no such model" in (tmp_path / "log").read_text()
