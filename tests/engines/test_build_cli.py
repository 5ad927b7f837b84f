"""sed-build's plan per stage (which graph, how typed), its arguments and dry run, without TensorRT."""

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.manifest import GraphVariant
from sed_deploy.engines.artifacts_build import stage_build
from sed_deploy.engines.cli import main
from sed_deploy.runtime.backends.options import BackendOptions


def test_dry_run_needs_no_tensorrt(tiny_artifacts, capsys):
    out, _ = tiny_artifacts
    assert main([str(out), "--precision", "fp16", "--dry-run", "--max-classes", "300", "--stages", "cost", "-q"]) == 0
    text = capsys.readouterr().out
    assert "cost           fp16 (strongly typed): fp16 graph checked at export" in text
    assert "text 1-32 (opt 16), text 33-128 (opt 80), text 129-300 (opt 300)" in text  # the vocabulary (5) is small
    assert not (out / "engines").exists()  # a dry run writes nothing


def test_dry_run_of_fp32_only_artifacts_names_the_flag_path(tiny_artifacts, tmp_path, capsys):
    """Artifacts exported without fp16 graphs still build: fp16 through TensorRT 10's FP16 flag."""
    out, _ = tiny_artifacts
    copy = tmp_path / "fp32only"
    shutil.copytree(out, copy)
    data = json.loads((copy / "manifest.json").read_text())
    for stage in data["stages"].values():
        stage.pop("variants", None)
    (copy / "manifest.json").write_text(json.dumps(data))
    assert main([str(copy), "--precision", "fp16", "--dry-run", "--stages", "decoder1", "text_encoder", "-q"]) == 0
    text = capsys.readouterr().out
    assert "decoder1       fp16 (FP16 flag): TensorRT 10.x FP16 builder flag on the fp32 graph (no fp16 graph" in text
    assert "text_encoder   fp32 (fp32): the text stage stays fp32" in text


class TestStageBuild:
    """Which graph each stage's engine is built from, and never a precision flag on a strongly typed network."""

    def test_fp32_is_the_fp32_graph_weakly_typed(self, tiny_artifacts):
        spec = tiny_artifacts[1].stages["cost"]
        build = stage_build(spec, "fp32", weak_fp16=False)
        assert (build.graph, build.strongly_typed, build.fp16_flag, build.computes) == (spec.file, False, False, "fp32")

    @pytest.mark.parametrize("weak_fp16", [True, False, None])
    def test_fp16_graph_is_built_strongly_typed_without_flags(self, tiny_artifacts, weak_fp16):
        spec = tiny_artifacts[1].stages["decoder2"]
        build = stage_build(spec, "fp16", weak_fp16=weak_fp16)
        assert build.graph == spec.variants["fp16"].file and build.graph_sha256 == spec.variants["fp16"].sha256
        assert build.strongly_typed and not build.fp16_flag and build.computes == "fp16"

    def test_a_stage_that_missed_its_tolerance_stays_fp32(self, tiny_artifacts):
        spec = tiny_artifacts[1].stages["decoder3"]
        fell_back = replace(spec, variants={"fp16": GraphVariant("fp16", spec.file, spec.sha256, {"max_rel": 0.5},
                                                                 fallback="fp16 graph off by 5.0e-01")})
        build = stage_build(fell_back, "fp16", weak_fp16=True)
        assert (build.graph, build.strongly_typed, build.fp16_flag, build.computes) == (spec.file, False, False, "fp32")
        assert "off by 5.0e-01" in build.note

    def test_the_text_stage_stays_fp32(self, tiny_artifacts):
        build = stage_build(tiny_artifacts[1].stages["text_encoder"], "fp16", weak_fp16=True)
        assert build.computes == "fp32" and not build.fp16_flag and not build.strongly_typed

    def test_no_fp16_graph_on_tensorrt_11_is_a_clear_error(self, tiny_artifacts):
        spec = replace(tiny_artifacts[1].stages["cost"], variants={})
        with pytest.raises(ConfigError, match="has no fp16 graph .* re-export with sed-export --precision fp16"):
            stage_build(spec, "fp16", weak_fp16=False)
        with pytest.raises(ConfigError, match="--fp16-mode flag needs TensorRT 10.x"):
            stage_build(tiny_artifacts[1].stages["cost"], "fp16", "flag", weak_fp16=False)

    def test_no_fp16_graph_on_tensorrt_10_uses_the_flag(self, tiny_artifacts):
        spec = replace(tiny_artifacts[1].stages["cost"], variants={})
        build = stage_build(spec, "fp16", weak_fp16=True)
        assert build.fp16_flag and not build.strongly_typed and build.graph == spec.file


@pytest.mark.parametrize("args,match", [
    (["--stages", "decoder9"], "unknown stage\\(s\\) \\['decoder9'\\]"),
    (["--profiles", "64,32"], "--profiles expects ascending"),
])
def test_argument_errors_are_one_line(tiny_artifacts, capsys, args, match):
    out, _ = tiny_artifacts
    assert main([str(out), "--dry-run", "-q", *args]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and re.search(match, err)


def test_max_classes_below_one_is_a_usage_error(tiny_artifacts, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(tiny_artifacts[0]), "--dry-run", "--max-classes", "0"])
    assert info.value.code == 2 and "--max-classes must be at least 1, got 0" in capsys.readouterr().err


def test_missing_artifacts(tmp_path, capsys):
    assert main([str(tmp_path), "--dry-run"]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_building_without_tensorrt_says_so(tiny_artifacts, capsys):
    out, _ = tiny_artifacts
    assert main([str(out), "--stages", "cost", "-q"]) == 1
    err = capsys.readouterr().err
    assert "tensorrt is not installed" in err and "pip install 'sed-deploy[trt]'" in err


@pytest.mark.gpu
def test_build_check_and_pipeline_on_a_gpu(tiny_artifacts, tmp_path):
    import shutil

    from sed_deploy.core.optional import available

    if not available("tensorrt"):
        pytest.skip("needs TensorRT (tensorrt.Builder)")
    from sed_deploy.runtime.pipeline import Pipeline

    out, _ = tiny_artifacts
    copy = tmp_path / "tiny"
    shutil.copytree(out, copy)
    for precision in ("fp32", "fp16"):
        assert main([str(copy), "--precision", precision, "--check", "--max-classes", "459", "-q"]) == 0
    image = np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)
    names = ["person", "dog", "tree, forest", "sky", "road"]
    results = {}
    for backend in ("tensorrt", "ort"):
        for cer in (True, False):
            # the fp32 engines (the fp16 ones are held to their tolerance by --check)
            pipeline = Pipeline.from_artifacts(copy, backend=backend, cer=cer, options=BackendOptions(precision="fp32"))
            pipeline.set_vocabulary(names)
            results[backend, cer] = pipeline(image)
    for cer in (True, False):
        trt, ort = results["tensorrt", cer], results["ort", cer]
        assert [k.tolist() for k in trt.kept] == [k.tolist() for k in ort.kept]
        assert np.abs(trt.scores - ort.scores).max() < 1e-3


class TestMemoryPlan:
    """Defect 4: at 641d8cd the engines were sized for at least 1024 classes whatever the vocabulary,
    and nothing told how much device memory a plan would take."""

    def test_max_classes_follow_the_vocabularies(self, tiny_artifacts, capsys):
        out, _ = tiny_artifacts
        assert main([str(out), "--dry-run", "-q", "--stages", "cost"]) == 0
        assert "max classes 5: the largest vocabulary embedded at export" in capsys.readouterr().out
        assert main([str(out), "--dry-run", "-q", "--stages", "cost", "--vocab", "a,b,c,d,e,f,g", "x,y"]) == 0
        text = capsys.readouterr().out
        assert "max classes 7: the largest vocabulary given with --vocab" in text and "text 1-7 (opt 7)" in text

    def test_dry_run_prints_the_estimate_per_stage_and_profile(self, tiny_artifacts, capsys):
        out, _ = tiny_artifacts
        assert main([str(out), "--dry-run", "-q", "--max-classes", "100"]) == 0
        text = capsys.readouterr().out
        rows = [line.split() for line in text.splitlines() if line.startswith("  decoder3 ")]
        assert [r[1:3] for r in rows] == [["T2=100", "T3=32"], ["T2=100", "T3=100"]]
        scratch = [float(r[-1]) for r in rows]
        assert 0 < scratch[0] < scratch[1]  # more classes, more activation memory
        assert "pipeline at the largest profiles: about" in text

    def test_budget_refuses_a_plan_that_cannot_fit(self, tiny_artifacts, capsys):
        out, _ = tiny_artifacts
        assert main([str(out), "--dry-run", "-q", "--max-classes", "2000", "--memory-budget", "10"]) == 1
        err = capsys.readouterr().err
        assert "the plan needs about" in err and "more than --memory-budget 10 MB" in err
        assert "MB per class" in err and "Traceback" not in err and err.count("\n") == 1
        assert main([str(out), "--dry-run", "-q", "--max-classes", "2", "--memory-budget", "100000"]) == 0
