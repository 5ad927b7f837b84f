"""One set of pipeline options for every tool, and a backend registry the runtime fills without importing up."""

import argparse

import pytest

from sed_deploy.benchmarks.accuracy.cli import build_parser as eval_parser
from sed_deploy.benchmarks.latency.cli import build_parser as bench_parser
from sed_deploy.runtime import backends
from sed_deploy.runtime.cli import add_pipeline_args
from sed_deploy.runtime.segment_cli import build_parser as segment_parser

SINGLE = {"--backend", "--precision", "--topk", "--cer", "--no-cer", "--threads", "--providers", "--device",
          "--max-pixels", "--cuda-graphs", "--gpu-timing"}


def pipeline_group(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    group = next(g for g in parser._action_groups if g.title == "pipeline")
    return {option: action for action in group._group_actions for option in action.option_strings}


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
