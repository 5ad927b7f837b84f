"""numpy resizing equals PyTorch's bilinear interpolation; banded label maps equal the direct argmax."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sed_deploy.runtime.postprocess import label_map, sigmoid
from sed_deploy.runtime.resize import linear_taps, resize_bilinear


@pytest.mark.parametrize("src,dst", [((24, 24), (768, 768)), ((640, 853), (768, 768)), ((192, 192), (37, 501)),
                                     ((5, 7), (5, 7)), ((1, 1), (9, 4)), ((192, 192), (3000, 4000))])
def test_resize_matches_torch(src, dst):
    x = np.random.default_rng(0).standard_normal((3, *src)).astype(np.float32)
    ours = resize_bilinear(x, *dst)
    ref = F.interpolate(torch.from_numpy(x)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
    # float32 arithmetic in a different order: a few ulp of values of order 1
    np.testing.assert_allclose(ours, ref, rtol=0, atol=2e-6)


def test_sigmoid_is_stable():
    x = np.array([-1000.0, -20.0, 0.0, 20.0, 1000.0], dtype=np.float32)
    np.testing.assert_allclose(sigmoid(x), torch.sigmoid(torch.from_numpy(x)).numpy(), rtol=1e-6)


def _direct_labels(scores, kept, num_classes, height, width):
    full = torch.zeros(num_classes, *scores.shape[1:])
    full[torch.from_numpy(kept)] = torch.from_numpy(scores)
    resized = F.interpolate(full[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    return resized, resized.argmax(dim=0).numpy()


@pytest.mark.parametrize("height,width,band", [(300, 451, 1), (97, 1333, 10_000), (192, 192, 7)])
def test_banded_label_map_equals_direct_argmax(height, width, band):
    rng = np.random.default_rng(1)
    kept = np.sort(rng.choice(40, size=9, replace=False))
    scores = sigmoid(rng.standard_normal((9, 32, 32)).astype(np.float32) * 3)
    ours = label_map(scores, kept, height, width, band_rows=band)
    resized, direct = _direct_labels(scores, kept, 40, height, width)
    differ = ours != direct
    if differ.any():  # only where the two best scores tie within float32 rounding
        top2 = torch.topk(resized, 2, dim=0).values.numpy()
        assert np.all((top2[0] - top2[1])[differ] < 1e-6)
    assert differ.mean() < 1e-4
    assert set(np.unique(ours)) <= set(kept)


def _per_pixel_labels(scores, kept, height, width):
    """The definition in float32, every class at every pixel: (tl*wj_lo + tr*wj_hi)*wi_lo +
    (bl*wj_lo + br*wj_hi)*wi_hi, first maximum, 0 where every score is 0."""
    (i0, i1, wi0, wi1), (j0, j1, wj0, wj1) = linear_taps(scores.shape[1], height), linear_taps(scores.shape[2], width)
    top = scores[:, i0][:, :, j0] * wj0 + scores[:, i0][:, :, j1] * wj1
    bottom = scores[:, i1][:, :, j0] * wj0 + scores[:, i1][:, :, j1] * wj1
    value = top * wi0[:, None] + bottom * wi1[:, None]  # [K,H,W]
    best = value.argmax(axis=0)
    return np.where(value.max(axis=0) > 0, kept[best], 0).astype(np.int32)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("band", [1, 32])
def test_label_map_is_bit_exact_with_the_per_pixel_definition(seed, band):
    """Exact ties (quantized scores), all-zero regions, single rows/columns and upsampling or
    downsampling: the bands, the decided cells and the skipped classes change no label."""
    rng = np.random.default_rng(seed)
    k, h, w = int(rng.integers(1, 10)), int(rng.integers(1, 18)), int(rng.integers(1, 18))
    scores = sigmoid(rng.standard_normal((k, h, w)).astype(np.float32) * 3)
    if seed % 2:
        scores = (np.round(scores * 4) / 4).astype(np.float32)  # many exact ties
    scores[:, : h // 3] = 0
    kept = np.sort(rng.choice(60, size=k, replace=False))
    height, width = int(rng.integers(1, 70)), int(rng.integers(1, 70))
    np.testing.assert_array_equal(label_map(scores, kept, height, width, band_rows=band),
                                  _per_pixel_labels(scores, kept, height, width))


def test_all_zero_pixels_get_class_zero_like_the_full_argmax():
    scores = np.zeros((2, 4, 4), dtype=np.float32)
    scores[1, :2] = 0.5
    labels = label_map(scores, np.array([3, 5]), 8, 8)
    _, direct = _direct_labels(scores, np.array([3, 5]), 6, 8, 8)
    np.testing.assert_array_equal(labels, direct)
    assert set(np.unique(labels)) == {0, 5}
