"""The exported stage graphs compute what their PyTorch stages compute (ONNX Runtime, CPU)."""

import numpy as np
import pytest
import torch

from sed_deploy.core.manifest import Manifest
from sed_deploy.export.onnx_export import sample_inputs
from sed_deploy.export.stages import build_stages
from sed_deploy.export.text import embed_vocabulary
from sed_deploy.export.validate import compare_case, ort_session
from sed_deploy.model import build_sed
from sed_deploy.runtime.vocabulary import read_vocabulary


@pytest.fixture(scope="module")
def stages():
    return build_stages(build_sed("tiny"), 16)


@pytest.mark.parametrize("sizes", [{"T": 1}, {"T": 3}, {"T": 459}])
def test_cost_graph(tiny_artifacts, stages, sizes):
    out, _ = tiny_artifacts
    result = compare_case(stages["cost"], ort_session(out / "cost.onnx"), sizes, seed=7)
    assert result.worst() < 1e-4, result.errors


@pytest.mark.parametrize("name", ["decoder1", "decoder2", "decoder3"])
@pytest.mark.parametrize("prev,cur", [(1, 1), (3, 7), (459, 40), (30, 30)])
def test_decoder_graphs(tiny_artifacts, stages, name, prev, cur):
    out, _ = tiny_artifacts
    stage = stages[name]
    prev_axis, cur_axis = stage.CONTRACT.dynamic["features1" if name == "decoder2" else stage.CONTRACT.inputs[1]][0], \
        stage.CONTRACT.dynamic["keep"][0]
    result = compare_case(stage, ort_session(out / f"{name}.onnx"), {prev_axis: prev, cur_axis: cur}, seed=3)
    assert result.worst() < 1e-4, result.errors


@pytest.mark.parametrize("rows,length", [(1, 2), (40, 77)])
def test_text_graph(tiny_artifacts, stages, rows, length):
    out, _ = tiny_artifacts
    result = compare_case(stages["text_encoder"], ort_session(out / "text_encoder.onnx"), {"M": rows, "L": length}, 1)
    assert result.worst() < 1e-4, result.errors


def test_keep_is_a_gather_with_repeats_and_any_order(tiny_artifacts, stages):
    out, _ = tiny_artifacts
    session = ort_session(out / "decoder1.onnx")
    keep = np.array([3, 1, 1, 0], dtype=np.int32)
    _, embedding, volume, guidance = (t.numpy() for t in sample_inputs(stages["decoder1"], {"T": 5, "T1": 4},
                                                                     torch.Generator().manual_seed(0)))
    gathered = session.run(None, {"keep": keep, "embedding": embedding, "volume": volume, "guidance4": guidance})
    direct = session.run(None, {"keep": np.arange(4, dtype=np.int32), "embedding": embedding[keep],
                                "volume": volume[keep], "guidance4": guidance})
    for a, b in zip(gathered, direct, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # the repeated class gets the same features twice
    np.testing.assert_allclose(gathered[0][1], gathered[0][2], rtol=1e-6, atol=1e-6)


def test_topk_outputs_pad_when_fewer_classes_than_k(tiny_artifacts, stages):
    out, manifest = tiny_artifacts
    inputs = sample_inputs(stages["cost"], {"T": 3}, torch.Generator().manual_seed(0))
    topk0 = ort_session(out / "cost.onnx").run(["topk0"], {"dense": inputs[0].numpy(), "text": inputs[1].numpy()})[0]
    assert topk0.shape[0] == manifest.topk == 16 and topk0.dtype == np.int32
    # every pixel ranks the 3 real classes first, then padding indices >= 3
    assert np.array_equal(np.sort(topk0[:3], axis=0), np.broadcast_to(np.arange(3)[:, None, None], topk0[:3].shape))
    assert topk0[3:].min() >= 3


def test_manifest_describes_the_folder(tiny_artifacts):
    out, manifest = tiny_artifacts
    loaded = Manifest.load(out)
    assert loaded.to_dict() == manifest.to_dict()
    loaded.verify_files(out)
    assert list(loaded.stages) == ["image_encoder", "text_encoder", "cost", "decoder1", "decoder2", "decoder3"]
    d1 = loaded.stages["decoder1"]
    assert d1.input("keep").dtype == "int32" and d1.input("keep").shape == ("T1",)
    assert d1.input("embedding").dynamic_axes == {0: "T"}
    assert d1.output("topk1").shape == (16, 8, 8)
    assert loaded.weights == {"weights": "random", "seed": 0}
    assert loaded.preprocessing.image_size == 128 and loaded.opset == 17
    assert all(c["errors"] for c in d1.validation["cases"])
    assert "torch" in loaded.exporter["versions"]


def test_vocabulary_embeddings_through_the_text_graph_match_torch(tiny_artifacts):
    out, manifest = tiny_artifacts
    entry = manifest.vocabularies["street"]
    stored = np.load(out / entry["file"])
    names = read_vocabulary(out.parent / "street.txt")
    reference = embed_vocabulary(build_sed("tiny"), names, show_progress=False).numpy()
    assert stored.shape == (5, 80, 32)
    np.testing.assert_allclose(stored, reference, rtol=0, atol=1e-5)


def test_plugin_variant_of_a_decoder_has_one_plugin_node_and_matches_torch(stages, tmp_path, monkeypatch):
    import onnx

    from sed_deploy.export.lint import lint_graph
    from sed_deploy.export.onnx_export import export_stage_proto, save_graph
    from sed_deploy.export.validate import validate_stage

    stage = stages["decoder2"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    proto = export_stage_proto(stage, 17, plugin=True)
    assert list(cwd.iterdir()) == []  # no temporary files left in the working directory
    ops = [(n.domain, n.op_type) for n in proto.graph.node]
    assert ops.count(("sed", "linear_class_attention")) == 1 and ("", "Elu") not in ops
    assert lint_graph(proto, stage.CONTRACT.dynamic) == []
    path = tmp_path / "decoder2.onnx"
    save_graph(proto, path, "decoder2.onnx.data")
    assert [i.name for i in onnx.load(path).graph.input] == list(stage.CONTRACT.inputs)
    cases = validate_stage(stage, path, [1, 17, 150], plugins=True)
    assert max(c.worst() for c in cases) < 1e-4
