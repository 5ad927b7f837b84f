"""fp16 graphs made and checked at export (`sed-export --precision fp16`), recorded in the manifest, run by ORT."""

import numpy as np
import onnx
import pytest

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.errors import ArtifactError
from sed_deploy.core.manifest import Manifest
from sed_deploy.export.fp16 import FP16_TOLERANCE, check_fp16, convert_to_fp16, float32_nodes
from sed_deploy.runtime.backends.options import BackendOptions
from sed_deploy.runtime.pipeline import Pipeline
from sed_deploy.runtime.stage_feeds import check_sizes, random_feeds

from ..conftest import ARTIFACTS_VOCAB


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


def test_custom_domain_nodes_stay_float32():
    """The plugin node's ONNX Runtime op is float32 only: the conversion must not feed it float16."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [helper.make_node("Relu", ["x"], ["a"]),
             helper.make_node("linear_class_attention", ["a"], ["b"], domain="sed"),
             helper.make_node("Relu", ["b"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("sed", 1)])
    assert 1 in float32_nodes(model.graph)
    converted = convert_to_fp16(model)
    plugin = next(n for n in converted.graph.node if n.domain == "sed")
    types = {v.name: v.type.tensor_type.elem_type for v in converted.graph.value_info}
    assert types.get(plugin.input[0], TensorProto.FLOAT) == TensorProto.FLOAT  # a Cast back to float32 feeds it
    assert any(n.op_type == "Cast" and n.output[0] == plugin.input[0] for n in converted.graph.node)


def test_export_records_checked_fp16_variants(tiny_artifacts):
    out, manifest = tiny_artifacts
    reloaded = Manifest.load(out)
    assert reloaded.precisions == ("fp32", "fp16")
    assert "fp16" not in reloaded.stages["text_encoder"].variants  # the text stage stays fp32
    for stage in IMAGE_STAGES:
        variant = reloaded.stages[stage].variants["fp16"]
        dynamic = any(t.dynamic_axes for t in reloaded.stages[stage].inputs)
        assert variant.check["cases"] >= (2 if dynamic else 1) and variant.check["tolerance"] == FP16_TOLERANCE
        if not variant.fallback:
            assert variant.file == f"{stage}.fp16.onnx" and (out / variant.file).is_file()
            assert variant.check["max_rel"] <= FP16_TOLERANCE
    reloaded.verify_files(out, precision="fp16")


def test_onnxruntime_runs_the_fp16_graphs_close_to_fp32(tiny_artifacts):
    out, _ = tiny_artifacts
    image = np.random.default_rng(3).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    results = {}
    for precision in ("fp32", "fp16"):
        options = BackendOptions(precision=precision)
        with Pipeline.from_artifacts(out, backend="ort", cer=False, options=options) as pipeline:
            pipeline.set_vocabulary(ARTIFACTS_VOCAB, show_progress=False)
            results[precision] = pipeline(image)
    a, b = results["fp32"].scores, results["fp16"].scores
    assert not np.array_equal(a, b)  # the fp16 graphs really ran
    assert np.abs(a - b).max() / np.abs(a).max() < FP16_TOLERANCE


def test_a_precision_that_was_not_exported_is_a_clear_error(tiny_artifacts):
    out, manifest = tiny_artifacts
    with pytest.raises(ArtifactError, match="stage cost has no int8 graph: export it with sed-export --precision"):
        manifest.stages["cost"].graph("int8")
