"""What sed-serve does before Triton starts: libpython on the loader path, and the edits of the
stub-side code PyTriton ships (applied to the installed PyTriton's files, compiled, refused when the
code is not 0.7.0's)."""

from __future__ import annotations

import re
import sysconfig

import pytest

from sed_deploy.core.errors import ConfigError, InternalError
from sed_deploy.serve import pytriton_patches
from sed_deploy.serve.server import ensure_libpython_on_loader_path

from . import fake_pb_utils


def test_libpython_goes_first_on_the_loader_path_once():
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("this Python has no shared libpython")
    libdir = sysconfig.get_config_var("LIBDIR")
    env = {"LD_LIBRARY_PATH": f"/opt/x:{libdir}:/opt/y"}
    assert ensure_libpython_on_loader_path(env) == libdir
    assert env["LD_LIBRARY_PATH"] == f"{libdir}:/opt/x:/opt/y"
    env = {}
    ensure_libpython_on_loader_path(env)
    assert env["LD_LIBRARY_PATH"] == libdir


def test_a_python_without_a_shared_library_is_refused_in_one_line(monkeypatch):
    real = sysconfig.get_config_var
    monkeypatch.setattr(sysconfig, "get_config_var", lambda key: 0 if key == "Py_ENABLE_SHARED" else real(key))
    with pytest.raises(ConfigError, match="has no shared libpython, which Triton's Python backend needs"):
        ensure_libpython_on_loader_path({})


def _proxy_files():
    """The stub-side files PyTriton ships, unpatched (whether or not install() ran in this process)."""
    model = pytest.importorskip("pytriton.models.model", reason="needs the serve extra")
    shipped = model.Model.get_proxy_model_files
    original = getattr(shipped, "sed_original", shipped)

    class Version1:
        model_version = 1
        SCRIPT_FILES_TO_COPY = model.Model.SCRIPT_FILES_TO_COPY

    return original(Version1())


def test_the_patches_apply_to_pytriton_and_compile():
    files = _proxy_files()
    patched = pytriton_patches.patch_proxy_files(files, 1)
    assert set(patched) == set(files)
    for key, source in patched.items():
        if key.endswith(".py"):
            compile(source, key, "exec")
    assert b"timeout_s: float = 120.0)" in patched["file:1/communication.py"]
    model = patched["file:1/model.py"]
    assert b"_sed_refusal_or_exception(" in model and b"refused = _sed_refuse_empty_inputs(triton_requests)" in model
    assert files["file:1/data.py"] == patched["file:1/data.py"]


def test_code_that_is_not_pytritons_0_7_0_is_refused():
    files = _proxy_files()
    files["file:1/model.py"] = files["file:1/model.py"].replace(b"assert eos", b"assert eos  # changed")
    with pytest.raises(InternalError, match="is not the code sed-serve patches"):
        pytriton_patches.patch_proxy_files(files, 1)


def _stub_functions():
    files = pytriton_patches.patch_proxy_files(_proxy_files(), 1)
    source = files["file:1/model.py"].decode()
    namespace = {"re": re, "pb_utils": fake_pb_utils}
    exec(source[source.index("def _sed_refusal_or_exception"):], namespace)  # the functions the patch adds
    return namespace


def test_a_marked_exception_becomes_one_invalid_arg_line_per_request():
    functions = _stub_functions()
    payload = ("Traceback (most recent call last):\n  File \"inference.py\", line 393, in _handle_requests\n"
               "sed_deploy.serve.server.Refused: sed-serve refused the request: image: empty (0 bytes)\n")
    responses = functions["_sed_refusal_or_exception"](payload, 2)
    assert [r.error().message() for r in responses] == ["image: empty (0 bytes)"] * 2
    assert responses[0].error().code() == fake_pb_utils.TritonError.INVALID_ARG
    other = functions["_sed_refusal_or_exception"]("Traceback ...\nValueError: a bug\n", 1)
    assert isinstance(other, fake_pb_utils.TritonModelException)


def test_an_empty_input_tensor_is_refused_before_pytriton_sees_it():
    import numpy as np

    functions = _stub_functions()
    empty = fake_pb_utils.InferenceRequest("sed", ["labels"], [
        fake_pb_utils.Tensor("image", np.array([b"x"], dtype=object)),
        fake_pb_utils.Tensor("classes", np.array([], dtype=object))])
    (response,) = functions["_sed_refuse_empty_inputs"]([empty])
    assert response.error().message().startswith("classes: empty (shape [0])")
    full = fake_pb_utils.InferenceRequest("sed", ["labels"], [fake_pb_utils.Tensor("image", np.array([b"x"], object))])
    assert functions["_sed_refuse_empty_inputs"]([full]) is None


@pytest.mark.parametrize("argv,message", [
    (["--instances", "0"], "argument --instances: expected a number of at least 1, got 0"),
    ([], "the following arguments are required: --artifacts"),
    (["--artifacts", "a", "--max-image-pixels", "5"], "unrecognized arguments: --max-image-pixels 5"),
])
def test_sed_serve_usage_errors_are_one_line(argv, message, capsys):
    """Issue 22: sed-serve printed argparse's usage block; now one line like every tool, exit code 2."""
    from sed_deploy.serve.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and message in err and err.startswith("sed-serve: error:")
