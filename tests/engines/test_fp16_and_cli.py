"""fp16 graphs made and checked on the CPU; sed-build's arguments and dry run."""

import re

import numpy as np
import onnx
import pytest

from sed_deploy.engines.cli import main
from sed_deploy.engines.feeds import check_sizes, random_feeds
from sed_deploy.engines.fp16 import FP16_TOLERANCE, check_fp16, convert_to_fp16, float32_nodes


@pytest.mark.parametrize("stage", ["text_encoder", "cost", "decoder1", "decoder3"])
def test_fp16_graph_is_close_to_fp32_and_keeps_sensitive_ops_fp32(tiny_artifacts, tmp_path, stage):
    out, manifest = tiny_artifacts
    spec = manifest.stages[stage]
    source = onnx.load(out / spec.file)
    converted = convert_to_fp16(source)
    onnx.checker.check_model(converted)
    path = tmp_path / f"{stage}.fp16.onnx"
    onnx.save(converted, path)
    # interface unchanged: same names and element types
    assert [(i.name, i.type.tensor_type.elem_type) for i in converted.graph.input] == \
        [(i.name, i.type.tensor_type.elem_type) for i in source.graph.input]
    assert [(o.name, o.type.tensor_type.elem_type) for o in converted.graph.output] == \
        [(o.name, o.type.tensor_type.elem_type) for o in source.graph.output]
    kinds = {n.op_type for n in converted.graph.node}
    assert "Cast" in kinds
    half = sum(init.data_type == onnx.TensorProto.FLOAT16 for init in converted.graph.initializer)
    assert half > 0  # weights really are float16
    kept32 = {source.graph.node[i].op_type for i in float32_nodes(source.graph)}
    assert kept32 & {"LayerNormalization", "InstanceNormalization", "ReduceSum", "Softmax", "TopK"}
    feeds = [random_feeds(spec, s, np.random.default_rng(i)) for i, s in enumerate(check_sizes(spec, (2, 40)))]
    result = check_fp16(spec, out / spec.file, path, feeds)
    assert 0 < result["max_rel"] < FP16_TOLERANCE


def test_dry_run_needs_no_tensorrt(tiny_artifacts, capsys):
    out, _ = tiny_artifacts
    assert main([str(out), "--precision", "fp16", "--dry-run", "--max-classes", "300", "--stages", "cost", "-q"]) == 0
    text = capsys.readouterr().out
    assert "cost           fp16 graph checked on the CPU" in text
    assert "text 1-32 (opt 16), text 33-128 (opt 80), text 129-300 (opt 300)" in text  # the vocabulary (5) is small
    assert (out / "engines" / "cost.fp16.onnx").is_file()


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

    from sed_deploy.runtime.optional import available

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
            pipeline = Pipeline.from_artifacts(copy, backend=backend, cer=cer, precision="fp32")
            pipeline.set_vocabulary(names)
            results[backend, cer] = pipeline(image)
    for cer in (True, False):
        trt, ort = results["tensorrt", cer], results["ort", cer]
        assert [k.tolist() for k in trt.kept] == [k.tolist() for k in ort.kept]
        assert np.abs(trt.scores - ort.scores).max() < 1e-3
