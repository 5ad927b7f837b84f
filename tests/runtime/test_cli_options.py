"""One set of pipeline options for every tool, and a backend registry the runtime fills without importing up."""

import argparse

import pytest

from sed_deploy.benchmarks.accuracy.cli import build_parser as eval_parser
from sed_deploy.benchmarks.latency.cli import build_parser as bench_parser
from sed_deploy.core.errors import ConfigError
from sed_deploy.runtime import backends
from sed_deploy.runtime.backends.options import BackendOptions, OrtOptions, TensorrtOptions, TorchOptions
from sed_deploy.runtime.pipeline_args import add_pipeline_args, options_per_backend, pipeline_settings
from sed_deploy.runtime.segment_cli import build_parser as segment_parser

SINGLE = {"--backend", "--precision", "--topk", "--cer", "--no-cer", "--threads", "--providers", "--device",
          "--max-pixels", "--cuda-graphs", "--gpu-timing"}


def pipeline_group(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    groups = [g for g in parser._action_groups if g.title in ("pipeline", "backend-specific")]
    return {option: action for group in groups for action in group._group_actions for option in action.option_strings}


@pytest.mark.parametrize("build", [segment_parser, eval_parser])
def test_segment_and_eval_take_the_same_pipeline_options(build):
    options = pipeline_group(build())
    assert set(options) == SINGLE
    reference = pipeline_group(segment_parser())
    for name, action in options.items():  # the same actions: same choices, types and defaults
        assert (action.choices, action.default, action.type) == (reference[name].choices, reference[name].default,
                                                                   reference[name].type)


def test_bench_takes_the_list_form_of_the_same_group():
    options = pipeline_group(bench_parser())
    assert set(options) == (SINGLE - {"--backend"}) | {"--backends"}
    args = bench_parser().parse_args(["--artifacts", "a", "-o", "o", "--backends", "ort,torch",
                                      "--precision", "fp32,fp16", "--topk", "2,8"])
    assert (args.backends, args.precision, args.topk) == (("ort", "torch"), ("fp32", "fp16"), (2, 8))


def test_a_new_backend_appears_in_every_tool(monkeypatch):
    """Registered once (the entry-point group), a backend is a choice of every CLI."""
    monkeypatch.setattr(backends, "registry", lambda: {**backends.BUILTIN, "torch": "x:Y", "newcomer": "x:Y"})
    for build in (segment_parser, eval_parser):
        assert "newcomer" in pipeline_group(build())["--backend"].choices
    assert "newcomer" in bench_parser().parse_args(["--artifacts", "a", "-o", "o", "--backends", "newcomer"]).backends


@pytest.mark.parametrize("argv,message", [
    (["--threads", "0"], "expected a number of at least 1, got 0"),
    (["--topk", "two"], "expected a whole number, got 'two'"),
    (["--precision", "fp64"], "invalid choice: 'fp64'"),
])
def test_bad_pipeline_options_are_usage_errors(argv, message, capsys):
    parser = argparse.ArgumentParser()
    add_pipeline_args(parser)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_the_torch_backend_registers_itself_from_the_pytorch_side():
    assert "torch" in backends.backend_names()
    cls = backends.backend_class("torch")
    assert cls.__module__ == "sed_deploy.export.torch_backend" and cls.name == "torch"
    assert backends.canonical_name("pytorch") == "torch"


def _parse(argv: list[str], several: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_pipeline_args(parser, several=several)
    return parser.parse_args(argv)


@pytest.mark.parametrize("argv,backend,options", [
    ([], "auto", BackendOptions()),
    (["--threads", "2", "--precision", "int8"], "auto", BackendOptions(precision="int8", threads=2)),
    (["--providers", "cuda,cpu"], "ort", OrtOptions(providers=("cuda", "cpu"))),  # the flag names its backend
    (["--backend", "tensorrt", "--cuda-graphs"], "tensorrt", TensorrtOptions(cuda_graphs=True)),
    (["--backend", "torch", "--device", "cuda:1", "--threads", "3"], "torch", TorchOptions(threads=3, device="cuda:1")),
    (["--backend", "ort"], "ort", OrtOptions()),
])
def test_the_group_parses_once_into_one_typed_options_object(argv, backend, options):
    settings = pipeline_settings(_parse(argv))
    assert (settings.backend, settings.options) == (backend, options)
    assert type(settings.options) is type(options)


@pytest.mark.parametrize("argv,message", [
    (["--backend", "openvino", "--providers", "cuda"], "--providers applies to the ort backend, not to openvino"),
    (["--backend", "ort", "--cuda-graphs", "--gpu-timing"], "--cuda-graphs, --gpu-timing apply to the tensorrt"),
    (["--providers", "cuda", "--device", "cuda"], "belong to different backends (ort, torch)"),
])
def test_a_setting_of_another_backend_is_refused_in_one_line(argv, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        pipeline_settings(_parse(argv))
    assert "\n" not in str(info.value)


def test_the_list_form_gives_each_backend_its_own_settings():
    args = _parse(["--backends", "ort,openvino", "--providers", "cpu", "--threads", "2"], several=True)
    found = options_per_backend(args)
    assert found["ort"] == OrtOptions(threads=2, providers=("cpu",)) and found["openvino"].threads == 2
    with pytest.raises(ConfigError, match="--device applies to the torch backend, which --backends leaves out"):
        options_per_backend(_parse(["--backends", "ort", "--device", "cuda"], several=True))


@pytest.mark.parametrize("make,message", [
    (lambda: BackendOptions(threads=0), "threads must be a whole number from 1 to 1024, got 0"),
    (lambda: BackendOptions(threads=10**9), "threads must be a whole number from 1 to 1024"),
    (lambda: BackendOptions(precision="fp64"), "unknown precision 'fp64'"),
    (lambda: OrtOptions(providers="cuda"), "providers must be a list of names"),
    (lambda: TensorrtOptions(cuda_graphs="yes"), "cuda_graphs must be True or False"),
])
def test_options_check_their_values_where_they_enter(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
