"""int8 export: `sed-export --precision int8` on SED-tiny, its manifest, its graphs, the fallback to fp32.

The tolerance the runtime is held to is the one recorded in the manifest (`export.int8.INT8_TOLERANCE`,
justified there); held-out images must stay within it too, as they are what users run.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import pytest
from conftest import write_calibration_images

from sed_deploy.core.contract import IMAGE_STAGES
from sed_deploy.core.manifest import file_sha256
from sed_deploy.export.calibration import calibration_digest, record_feeds
from sed_deploy.export.int8 import INT8_STAGES, float_nodes, write_int8_variant
from sed_deploy.export.lint import lint_graph
from sed_deploy.runtime.backends.onnxruntime import OrtBackend
from sed_deploy.runtime.backends.options import BackendOptions, OrtOptions
from sed_deploy.runtime.embedding_cache import EmbeddingCache
from sed_deploy.runtime.vocabulary import read_vocabulary


def test_manifest_records_precision_calibration_and_error_per_stage(tiny_int8):
    out, manifest, images, vocab = tiny_int8
    names = read_vocabulary(str(vocab))
    assert "int8" in manifest.precisions
    for stage in IMAGE_STAGES:
        variant = manifest.stages[stage].variants["int8"]
        calibration = variant.check["calibration"]
        assert calibration["digest"] == calibration_digest(sorted(images.iterdir()), names)
        assert calibration["images"] == 3 and calibration["vocabulary"] == "street"
        if stage in INT8_STAGES:
            assert not variant.fallback and variant.file == f"{stage}.int8.onnx"
            assert variant.sha256 == file_sha256(out / variant.file)
            assert 0 < variant.check["max_rel"] <= variant.check["tolerance"], variant.check
            assert variant.check["min_cosine"] >= 0.99 and variant.check["cases"] == 3
            assert manifest.stages[stage].runs_at("int8") == "int8"
        else:  # decoder2/3: int8 does not pay, recorded as the fp32 graph with the reason
            assert variant.fallback and variant.file == manifest.stages[stage].file
            assert manifest.stages[stage].runs_at("int8") == "fp32"
    assert "int8" not in manifest.stages["text_encoder"].variants
    assert manifest.vocabularies["street"]["classes"] == len(names)


@pytest.mark.parametrize("stage", INT8_STAGES)
def test_int8_graphs_are_symmetric_qdq_that_pass_the_lint(tiny_int8, stage):
    out, manifest, _, _ = tiny_int8
    spec = manifest.stages[stage]
    model = onnx.shape_inference.infer_shapes(onnx.load(str(out / spec.variants["int8"].file)))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name
    assert not [n for n in model.graph.node if n.op_type.startswith("QLinear") or n.domain not in ("", "ai.onnx")]
    assert lint_graph(model, {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs)}) == []
    kept_float = set(float_nodes(onnx.load(str(out / spec.file)), stage))
    quantized = {n.name for n in model.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
                 and any(i.endswith("_DequantizeLinear_Output") for i in n.input)}
    assert kept_float and not kept_float & quantized and quantized


def test_sensitive_nodes_stay_float(tiny_int8):
    out, manifest, _, _ = tiny_int8
    graphs = {s: onnx.load(str(out / manifest.stages[s].file)) for s in INT8_STAGES}
    by_name = {s: {n.name: n for n in g.graph.node} for s, g in graphs.items()}
    encoder = float_nodes(graphs["image_encoder"], "image_encoder")
    assert any("image" in by_name["image_encoder"][n].input for n in encoder)  # the stem convolution
    cost = [by_name["cost"][n].op_type for n in float_nodes(graphs["cost"], "cost")]
    assert "MatMul" in cost and "Conv" in cost  # text x image cosine, the head0 top-k conv
    decoder = [by_name["decoder1"][n].op_type for n in float_nodes(graphs["decoder1"], "decoder1")]
    assert decoder.count("MatMul") >= 2 and "Conv" in decoder  # class-attention sums, the head1 conv


def _int8_backend(name: str):
    if name == "ort":
        return OrtBackend, OrtOptions(providers=("cpu",), precision="int8"), "ort int8"
    pytest.importorskip("openvino", reason="the openvino backend needs the openvino package ([openvino])")
    from sed_deploy.runtime.backends.openvino import OpenvinoBackend

    return OpenvinoBackend, BackendOptions(precision="int8", threads=1), "openvino int8 (hint f32)"


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_int8_stages_stay_within_the_recorded_tolerance_on_new_images(tiny_int8, tmp_path, backend):
    """Each runtime runs the int8 file in its own form (`runtime.qdq`); both must stay within what the
    export measured and recorded, against the fp32 graph on ONNX Runtime, on images not calibrated on."""
    kind, options, described = _int8_backend(backend)
    out, manifest, _, vocab = tiny_int8
    names = read_vocabulary(str(vocab))
    text = EmbeddingCache(out / "text").get(manifest.vocabularies["street"]["key"])
    held_out = sorted(write_calibration_images(tmp_path / "new", count=2, seed=7).iterdir())
    feeds = record_feeds(manifest, out, held_out, text, names, quiet=True)
    for stage in INT8_STAGES:
        spec = manifest.stages[stage]
        with OrtBackend(spec, out, manifest, OrtOptions(providers=("cpu",))) as fp32, \
                kind(spec, out, manifest, options) as int8:
            assert int8.describe() == described
            for f in feeds[stage]:
                ref, got = fp32.run(f), int8.run(f)
                for t in spec.outputs:
                    if t.dtype != "float32":
                        continue
                    rel = np.abs(ref[t.name] - got[t.name]).max() / np.abs(ref[t.name]).max()
                    assert rel <= spec.variants["int8"].check["tolerance"], (stage, t.name, rel)
                    assert np.array_equal(ref[t.name], got[t.name]) == (rel == 0)


def test_a_stage_over_its_tolerance_keeps_its_fp32_graph(tiny_int8, tmp_path):
    out, manifest, images, vocab = tiny_int8
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    names = read_vocabulary(str(vocab))
    text = EmbeddingCache(folder / "text").get(manifest.vocabularies["street"]["key"])
    feeds = record_feeds(manifest, folder, sorted(images.iterdir())[:1], text, names, quiet=True)
    spec = manifest.stages["cost"]
    (folder / "cost.int8.onnx").unlink()
    variant = write_int8_variant(spec, folder, feeds["cost"], {"digest": "x"}, tolerance=1e-6)
    assert variant.fallback.startswith("int8 graph off by") and "tolerance 1e-06" in variant.fallback
    assert variant.file == spec.file and variant.sha256 == spec.sha256
    assert variant.check["max_rel"] > 1e-6
    assert not [p.name for p in folder.iterdir() if "cost.int8" in p.name]  # no int8 file, no partial one


def test_the_lint_refuses_asymmetric_quantization(tiny_int8):
    """The uint8 form the CPU runtimes load is not an artifact: TensorRT would refuse it, so the lint does."""
    from sed_deploy.runtime.qdq import activations_to_uint8

    out, manifest, _, _ = tiny_int8
    spec = manifest.stages["cost"]
    model = activations_to_uint8(onnx.load(str(out / spec.variants["int8"].file)))
    problems = lint_graph(model, {t.name: t.dynamic_axes for t in (*spec.inputs, *spec.outputs)})
    assert problems and all("is not symmetric int8 (zero point uint8 [128]" in p for p in problems)


def test_reuse_follows_the_calibration_set(tiny_int8, tmp_path):
    from sed_deploy.export.artifacts import ExportOptions, current_manifest

    out, _, images, vocab = tiny_int8
    options = ExportOptions(backbone="tiny", output=out, precisions=("fp32", "int8"), calib_images=images,
                            calib_vocab=str(vocab))
    assert current_manifest(options) is not None
    changed = tmp_path / "calib"
    shutil.copytree(images, changed)
    (changed / "calib1.png").write_bytes((changed / "calib2.png").read_bytes())  # other contents, same names
    assert current_manifest(ExportOptions(backbone="tiny", output=out, precisions=("fp32", "int8"),
                                          calib_images=changed, calib_vocab=str(vocab))) is None
    assert current_manifest(ExportOptions(backbone="tiny", output=out, precisions=("fp32", "int8"),
                                          calib_images=images, calib_vocab=str(vocab), calib_count=2)) is None
