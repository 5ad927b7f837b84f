"""Class-attention pooling, an export option: 1x1 (the published evaluation, default) and 2x2 (the official demo).

The official `ClassTransformerLayer` computes x + up(pool(x) + delta), where pool is a p x p average
pooling (floor), delta the attention and MLP residuals on the pooled class tokens, and up a bilinear
resize with aligned corners back to the input size. The reference below is written straight from
that description, token by token, independently of `model/decoder.py`.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sed_deploy.core.errors import ConfigError
from sed_deploy.export.lint import lint_graph
from sed_deploy.export.onnx_export import export_stage_proto, save_graph
from sed_deploy.export.stages import build_stages
from sed_deploy.export.validate import validate_stage
from sed_deploy.model import build_sed
from sed_deploy.model.decoder import ClassAttentionLayer


def official_formula(layer: ClassAttentionLayer, x: torch.Tensor, batch: int, p: int) -> torch.Tensor:
    """x [B*T,C,H,W] through the official layer's steps, one pixel sequence at a time."""
    _, channels, height, width = x.shape
    pooled = F.avg_pool2d(x, p) if p > 1 else x
    out = torch.empty_like(pooled)
    classes = x.shape[0] // batch
    for b in range(batch):
        for i in range(pooled.shape[2]):
            for j in range(pooled.shape[3]):
                seq = pooled[b * classes:(b + 1) * classes, :, i, j][None]  # [1,T,C]
                seq = seq + layer.attention(layer.norm1(seq))
                seq = seq + layer.MLP(layer.norm2(seq))
                out[b * classes:(b + 1) * classes, :, i, j] = seq[0]
    if p > 1:
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=True)
    return x + out


@pytest.mark.parametrize("p, size", [(1, 6), (2, 6), (2, 7)])  # 7: odd sizes pool with floor, as AvgPool2d
def test_layer_matches_the_official_formula(p, size):
    torch.manual_seed(0)
    layer = ClassAttentionLayer(16, 2, pooling=p).eval()
    x = torch.randn(2 * 5, 16, size, size)  # batch 2, 5 classes
    with torch.no_grad():
        ours, reference = layer(x, batch=2), official_formula(layer, x, 2, p)
    torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-5)


def test_pooling_changes_the_output_and_no_weight():
    plain = build_sed("tiny", seed=0)
    pooled = build_sed("tiny", seed=0, attention_pooling=2)
    assert pooled.config.to_dict()["attention_pooling"] == 2 and plain.config.attention_pooling == 1
    assert plain.state_dict().keys() == pooled.state_dict().keys()  # a checkpoint loads into either
    torch.manual_seed(1)
    image, text = torch.randn(1, 3, 128, 128), torch.randn(5, 80, 32)
    with torch.no_grad():
        a, b = plain(image, text).final, pooled(image, text).final
    assert (a - b).abs().max() > 1e-3
    with pytest.raises(ConfigError, match="pooling must be one of"):
        build_sed("tiny", attention_pooling=3)


def test_a_pooled_decoder_exports_and_matches_torch(tmp_path):
    """2x2 adds an AveragePool and a linear Resize per layer; both are TensorRT-friendly and checked."""
    stage = build_stages(build_sed("tiny", seed=0, attention_pooling=2), 16)["decoder1"]
    proto = export_stage_proto(stage, 17)
    ops = {n.op_type for n in proto.graph.node}
    assert {"AveragePool", "Resize"} <= ops and lint_graph(proto, stage.CONTRACT.dynamic) == []
    path = tmp_path / "decoder1.onnx"
    save_graph(proto, path, "decoder1.onnx.data")
    cases = validate_stage(stage, path, [1, 17])
    assert max(c.worst() for c in cases) < 1e-4
