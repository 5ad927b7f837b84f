"""The staged pipeline equals the unstaged PyTorch model, on ONNX Runtime, torch and OpenVINO (when
installed), CER on and off.

Vocabularies of 150 and 459 classes would take long to encode for every case, and the text stage
is tested on its own; so these equivalence tests feed the same random unit embeddings to the
pipeline (`set_vocabulary(names, embeddings=...)`) and to the unstaged model.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.optional import available
from sed_deploy.model import build_sed
from sed_deploy.runtime.pipeline import Pipeline, topk_union
from sed_deploy.runtime.preprocess import preprocess

from ..conftest import load_vocab, unit_embeddings


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(5).integers(0, 256, (100, 140, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def pipelines(tiny_artifacts):
    out, _ = tiny_artifacts
    names = ("ort", "torch", "openvino") if available("openvino") else ("ort", "torch")
    return {name: Pipeline.from_artifacts(out, backend=name) for name in names}


@pytest.fixture(scope="module")
def unstaged():
    return build_sed("tiny", seed=0)


def _unstaged(model, image, text, manifest, topk, cer):
    x = torch.from_numpy(preprocess(image, manifest.preprocessing))
    with torch.inference_mode():
        if cer:
            result = model.forward_cer(x, torch.from_numpy(text), topk)
            return result.scores.numpy(), [k.numpy() for k in result.kept]
        scores = model(x, torch.from_numpy(text)).final[0].sigmoid().numpy()
        return scores, [np.arange(len(text))] * 3


def _resized(scores, height, width):
    return F.interpolate(torch.from_numpy(scores)[None], size=(height, width), mode="bilinear")[0].numpy()


@pytest.mark.parametrize("setting", [("cer", 8), ("cer", 2), ("off", None)])
@pytest.mark.parametrize("count", [2, 17, 150, 459])
def test_pipelines_equal_the_unstaged_model(tiny_artifacts, pipelines, unstaged, image, count, setting):
    _, manifest = tiny_artifacts
    cer, topk = setting[0] == "cer", setting[1] or 8
    text = unit_embeddings(count, seed=count)
    names = [f"class {i}" for i in range(count)]
    ref_scores, ref_kept = _unstaged(unstaged, image, text, manifest, topk, cer)
    ref_full = _resized(ref_scores, *image.shape[:2])
    for pipeline in pipelines.values():
        pipeline.cer, pipeline.topk = cer, topk
        pipeline.set_vocabulary(names, embeddings=text)
        result = pipeline(image)
        for got, want in zip(result.kept, ref_kept, strict=True):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(result.score_ids, ref_kept[2])
        # scores within 1e-4 of the output scale; rejected classes are exactly 0 on both sides
        scale = np.abs(ref_scores).max()
        assert np.abs(result.scores - ref_scores[result.score_ids]).max() <= 1e-4 * scale
        rejected = np.setdiff1d(np.arange(count), result.score_ids)
        assert np.all(ref_scores[rejected] == 0)
        ref_labels = ref_full.argmax(axis=0)
        differ = result.labels != ref_labels
        if differ.any():  # only near-ties may flip
            top2 = -np.sort(-ref_full[:, differ], axis=0)[:2]
            assert np.all(top2[0] - top2[1] <= 1e-4 * scale)
        assert differ.mean() < 1e-3
    if cer and count > (manifest.config["image_size"] // 32) ** 2 * topk:
        assert len(ref_kept[0]) < count  # pruning really happened


def test_cer_prunes_on_tiny_with_small_k(pipelines, image):
    pipeline = pipelines["ort"]
    pipeline.cer, pipeline.topk = True, 1
    pipeline.set_vocabulary([f"c{i}" for i in range(150)], embeddings=unit_embeddings(150, 9))
    result = pipeline(image)
    sizes = [len(k) for k in result.kept]
    assert sizes[0] <= 16 < 150 and sizes[0] >= sizes[1] >= sizes[2] >= 1
    assert set(np.unique(result.labels)) <= set(result.score_ids.tolist())


def test_topk_union_drops_padding_and_clips_k():
    topk = np.array([[[0, 5]], [[2, 6]], [[7, 1]]], dtype=np.int32)  # K=3 over 1x2 pixels, T=5
    assert topk_union(topk, 1, 5).tolist() == [0]  # 5 is padding
    assert topk_union(topk, 2, 5).tolist() == [0, 2]
    assert topk_union(topk, 3, 5).tolist() == [0, 1, 2]


def test_vocabulary_through_the_text_stage_equals_the_torch_model(tiny_artifacts, unstaged):
    from sed_deploy.export.text import embed_vocabulary

    out, _ = tiny_artifacts
    names = load_vocab("voc20")[:6] + ["München", "naïve café"]
    pipeline = Pipeline.from_artifacts(out, backend="ort", cache_dir=out.parent / "cache")
    pipeline.set_vocabulary(names, show_progress=False)
    reference = embed_vocabulary(unstaged, names, show_progress=False).numpy()
    np.testing.assert_allclose(pipeline.text, reference, rtol=0, atol=1e-5)
    assert len(list((out.parent / "cache" / "text").glob("*.npy"))) == 1


def test_shipped_embeddings_are_used(tiny_artifacts, monkeypatch):
    out, _ = tiny_artifacts
    pipeline = Pipeline.from_artifacts(out, backend="ort")
    monkeypatch.setattr(pipeline, "encode_tokens", lambda tokens: pytest.fail("text stage should not run"))
    pipeline.set_vocabulary(["person", "dog", "tree, forest", "sky", "road"])
    assert pipeline.text.shape == (5, 80, 32)


def test_calling_before_a_vocabulary_is_set(tiny_artifacts, image):
    pipeline = Pipeline.from_artifacts(tiny_artifacts[0], backend="ort")
    with pytest.raises(ConfigError, match="no vocabulary set: call pipeline.set_vocabulary"):
        pipeline(image)


def test_topk_above_the_exported_k(tiny_artifacts):
    with pytest.raises(ConfigError, match="top-k must be between 1 and 16 .* got 17"):
        Pipeline.from_artifacts(tiny_artifacts[0], backend="ort", topk=17)


def test_unknown_backend(tiny_artifacts):
    with pytest.raises(ConfigError, match="unknown backend 'cuda'; expected auto, ort, openvino, tensorrt, torch"):
        Pipeline.from_artifacts(tiny_artifacts[0], backend="cuda")


def test_auto_picks_the_fastest_cpu_engine_without_tensorrt(tiny_artifacts):
    assert Pipeline.from_artifacts(tiny_artifacts[0]).backend == ("openvino" if available("openvino") else "ort")
