"""Shapes at every boundary, determinism, and category early rejection of the PyTorch model (tiny)."""

import pytest
import torch
import torch.nn.functional as F

from sed_deploy.core.errors import ConfigError
from sed_deploy.model import build_sed, topk_union


def _inputs(model, num_classes, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = model.config.image_size
    image = torch.randn(1, 3, size, size, generator=g)
    cfg = model.config
    text = F.normalize(torch.randn(num_classes, cfg.num_templates, cfg.embed_dim, generator=g), dim=-1)
    return image, text


@torch.inference_mode()
def test_shapes_at_every_boundary(tiny_model):
    cfg = tiny_model.config
    s, t, p = cfg.image_size, 5, cfg.num_templates
    image, text = _inputs(tiny_model, t)
    feats = tiny_model.encode_image(image)
    assert feats.dense.shape == (1, cfg.embed_dim, s // 32, s // 32)
    assert feats.res4.shape == (1, cfg.trunk_dims[2], s // 16, s // 16)
    assert feats.res3.shape == (1, cfg.trunk_dims[1], s // 8, s // 8)
    assert feats.res2.shape == (1, cfg.trunk_dims[0], s // 4, s // 4)
    head = tiny_model.transformer
    g4, g3, g2 = head.image_guidance(feats.res4, feats.res3, feats.res2)
    assert (g4.shape, g3.shape, g2.shape) == (
        (1, cfg.guidance_dims[0], s // 16, s // 16),
        (1, cfg.guidance_dims[1], s // 8, s // 8),
        (1, cfg.guidance_dims[2], s // 4, s // 4),
    )
    corr = head.cost_volume(feats.dense, text)
    assert corr.shape == (t, p, s // 32, s // 32)
    assert corr.abs().max() <= 1.0 + 1e-5  # cosine similarities
    emb = head.embed_cost(corr)
    assert emb.shape == (t, cfg.hidden_dim, s // 32, s // 32)
    c1 = head.corr_guidance(0, corr)
    x1 = head.decoder1(emb, g4, c1)
    assert c1.shape == (t, cfg.guidance_dims[0], s // 16, s // 16)
    assert x1.shape == (t, cfg.decoder_dims[0], s // 16, s // 16)
    c2 = head.corr_guidance(1, c1)
    x2 = head.decoder2(x1, g3, c2)
    assert x2.shape == (t, cfg.decoder_dims[1], s // 8, s // 8)
    x3 = head.decoder3(x2, g2, head.corr_guidance(2, c2))
    assert x3.shape == (t, cfg.decoder_dims[2], s // 4, s // 4)
    out = tiny_model(image, text)
    assert out.final.shape == (1, t, s // 4, s // 4)
    assert (out.aux0.shape, out.aux1.shape, out.aux2.shape) == (
        (1, t, s // 32, s // 32), (1, t, s // 16, s // 16), (1, t, s // 8, s // 8))
    torch.testing.assert_close(out.final[0, :, None], head.head(x3), rtol=0, atol=0)


@torch.inference_mode()
def test_standard_path_handles_a_batch(tiny_model):
    image, text = _inputs(tiny_model, 3)
    batch = torch.cat([image, image.flip(-1)])
    out = tiny_model(batch, text)
    assert out.final.shape[:2] == (2, 3)
    torch.testing.assert_close(out.final[:1], tiny_model(image, text).final, rtol=1e-5, atol=1e-5)


def test_same_seed_same_model_other_seed_other_model():
    a, b, c = build_sed("tiny", seed=3), build_sed("tiny", seed=3), build_sed("tiny", seed=4)
    image, text = _inputs(a, 4)
    with torch.inference_mode():
        assert torch.equal(a(image, text).final, b(image, text).final)
        assert not torch.allclose(a(image, text).final, c(image, text).final)
    assert a.weights == {"weights": "random", "seed": 3}


def test_topk_union_clips_k_and_sorts():
    logits = torch.tensor([[[0.0, 5.0]], [[3.0, 1.0]], [[1.0, 0.0]]])  # [T=3,1,2]
    assert topk_union(logits, 1).tolist() == [0, 1]
    assert topk_union(logits, 10).tolist() == [0, 1, 2]


@torch.inference_mode()
@pytest.mark.parametrize("num_classes", [1, 2, 17])
def test_cer_with_k_at_least_t_is_the_standard_path(tiny_model, num_classes):
    image, text = _inputs(tiny_model, num_classes)
    cer = tiny_model.forward_cer(image, text, topk=num_classes)
    standard = tiny_model(image, text).final[0].sigmoid()
    assert all(len(k) == num_classes for k in cer.kept)
    torch.testing.assert_close(cer.scores, standard, rtol=0, atol=0)


@torch.inference_mode()
def test_cer_prunes_and_rejected_classes_score_zero(tiny_model):
    image, text = _inputs(tiny_model, 150, seed=1)
    cer = tiny_model.forward_cer(image, text, topk=1)
    sizes = [len(k) for k in cer.kept]
    # head0 sees (S/32)^2 = 16 pixels: with k=1 at most 16 of 150 classes survive
    assert sizes[0] <= (tiny_model.config.feature_size ** 2) < 150
    assert sizes[0] >= sizes[1] >= sizes[2] >= 1
    assert set(cer.kept[1].tolist()) <= set(cer.kept[0].tolist())
    assert set(cer.kept[2].tolist()) <= set(cer.kept[1].tolist())
    rejected = torch.ones(150, dtype=torch.bool)
    rejected[cer.kept[2]] = False
    assert torch.all(cer.scores[rejected] == 0)
    assert torch.all(cer.scores[cer.kept[2]] > 0)


class _ForcedHead0(torch.nn.Module):
    """head0 stand-in: logit 10 for the chosen classes and 0 elsewhere, at every pixel."""

    def __init__(self, chosen):
        super().__init__()
        self.chosen = torch.tensor(chosen)

    def forward(self, x):
        hit = torch.isin(torch.arange(x.shape[0]), self.chosen).float() * 10.0
        return hit[:, None, None, None].expand(x.shape[0], 1, *x.shape[-2:])


@torch.inference_mode()
def test_cer_scores_of_kept_classes_equal_standard_path_on_the_kept_set():
    model = build_sed("tiny", seed=5)
    image, text = _inputs(model, 17, seed=2)
    chosen = [1, 4, 9, 16]
    model.transformer.head0 = _ForcedHead0(chosen)
    # k = 4: head0 keeps exactly `chosen`; head1 and head2 then see 4 classes and keep them all
    cer = model.forward_cer(image, text, topk=len(chosen))
    assert [k.tolist() for k in cer.kept] == [chosen] * 3
    on_kept_set = model(image, text[chosen]).final[0].sigmoid()
    torch.testing.assert_close(cer.scores[chosen], on_kept_set, rtol=1e-6, atol=1e-7)
    others = [i for i in range(17) if i not in chosen]
    assert torch.all(cer.scores[others] == 0)


def test_cer_refuses_a_batch(tiny_model):
    image, text = _inputs(tiny_model, 3)
    with pytest.raises(ConfigError, match="batch 1.*got batch 2"):
        tiny_model.forward_cer(torch.cat([image, image]), text)


def test_cer_refuses_k_below_one(tiny_model):
    image, text = _inputs(tiny_model, 3)
    with pytest.raises(ConfigError, match="top-k must be at least 1, got 0"):
        tiny_model.forward_cer(image, text, topk=0)
