"""The CLIP side of SED: building the open_clip ConvNeXt model and its two dense forward passes.

SED's modified open_clip returns, for an image, the ConvNeXt stage outputs res2..res5 and a dense
map made by pushing every res5 pixel through the classification head (trunk LayerNorm, then the
visual projection) with no pooling (spec section 3). Stock open_clip has no such mode, so
`dense_image_features` composes it from the model's own submodules; the weights and their names
stay open_clip's (`clip_model.visual.trunk.*`, `clip_model.transformer.*`, ...).

The text tower is causal: the feature at the end-of-text token depends only on the tokens before
it, so `encode_tokens` accepts token rows truncated to any length L <= 77 and gives the same result
as the full 77-token computation.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sed_deploy.core.optional import require

from .config import SedConfig
from .ops import l2_normalize


class DenseFeatures(NamedTuple):
    """Dense outputs of the CLIP image tower for a [B,3,S,S] image (S = config.image_size).

    Attributes:
        dense: per-pixel CLIP embedding, [B,D,S/32,S/32] (not normalised).
        res2: trunk stage 1 output, [B,C1,S/4,S/4].
        res3: trunk stage 2 output, [B,C2,S/8,S/8].
        res4: trunk stage 3 output, [B,C3,S/16,S/16].
    """

    dense: torch.Tensor
    res2: torch.Tensor
    res3: torch.Tensor
    res4: torch.Tensor


def build_clip(config: SedConfig) -> nn.Module:
    """An open_clip `CLIP` with the architecture of `config`, randomly initialised (no download).

    B and L follow open_clip's `convnext_base_w_320` / `convnext_large_d_320` configs. For `tiny`,
    the trunk is a timm ConvNeXt of the same block type with the config's small depths and widths.
    """
    open_clip = require("open_clip", "building the CLIP model")
    timm = require("timm", "building the CLIP model")
    custom_trunk = not config.open_clip_name
    vision_cfg = dict(
        # a small registered ConvNeXt stands in for the tiny trunk, which replaces it below
        timm_model_name="test_convnext2" if custom_trunk else _timm_trunk_name(config),
        timm_model_pretrained=False,
        timm_pool="",
        timm_proj=config.visual_head,
        timm_drop=0.0,
        image_size=config.image_size,
    )
    text_cfg = dict(
        context_length=config.context_length,
        vocab_size=config.vocab_size,
        width=config.text_width,
        heads=config.text_heads,
        layers=config.text_layers,
    )
    clip = open_clip.model.CLIP(embed_dim=config.embed_dim, vision_cfg=vision_cfg, text_cfg=text_cfg)
    if custom_trunk:
        trunk = timm.create_model(
            "convnext_base", pretrained=False, depths=config.trunk_depths, dims=config.trunk_dims
        )
        trunk.reset_classifier(0)
        clip.visual.trunk = trunk
        clip.visual.head.proj = nn.Linear(config.trunk_dims[-1], config.embed_dim, bias=False)
    return clip


def _timm_trunk_name(config: SedConfig) -> str:
    return {"linear": "convnext_base", "mlp": "convnext_large"}[config.visual_head]


def dense_image_features(clip: nn.Module, image: torch.Tensor) -> DenseFeatures:
    """Run the CLIP image tower in SED's dense mode.

    Args:
        clip: a model from `build_clip`.
        image: [B,3,S,S] float32, normalised with the CLIP mean/std in the 0-255 scale.
    """
    trunk = clip.visual.trunk
    x = trunk.stem(image)
    stages = []
    for stage in trunk.stages:
        x = stage(x)
        stages.append(x)
    x = trunk.norm_pre(x)
    # The classification head applied to every pixel as its own 1x1 image: the average pool is
    # then the identity, leaving the channel LayerNorm and the visual projection.
    x = trunk.head.norm(x).permute(0, 2, 3, 1)
    dense = clip.visual.head(x).permute(0, 3, 1, 2)
    return DenseFeatures(dense=dense, res2=stages[0], res3=stages[1], res4=stages[2])


def encode_tokens(clip: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """Unit-normalised text embeddings of token rows, [M,L] int64 -> [M,D] float32.

    L may be anything from the longest prompt's length (end-of-text token included) to 77: the tower
    is causal and the result is taken at the end-of-text token, the largest id of each row.
    """
    length = tokens.shape[1]
    x = clip.token_embedding(tokens) + clip.positional_embedding[:length]
    x = clip.transformer(x, attn_mask=clip.attn_mask[:length, :length])
    x = clip.ln_final(x)
    eot = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
    return l2_normalize(eot @ clip.text_projection, dim=-1)

