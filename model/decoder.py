"""SED's gradual fusion decoder: one `UpBlock` per scale, read top-down Block -> Layer -> UpBlock.

An `UpBlock` (the official `Up`) is SED's feature aggregation module (FAM: a ConvNeXt block on every
class map, then linear attention along the class axis) followed by its skip-layer fusion module
(SFM: a learned 2x transposed-conv upsampling, concatenation with the image and cost-map guidance,
and a DoubleConv). Class maps are flattened batch-major, [B*T,C,H,W], as in the original.
Submodule names are the official ones, so the state_dict keys match the checkpoints (spec 6, 7, 9).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sed_deploy.kernels.dispatch import class_attention


class DecoderConvNeXtBlock(nn.Module):
    """ConvNeXt block of the decoder (official `cnext`): 9x9 depthwise conv, channels-last
    LayerNorm (eps 1e-6), Linear C->4C, GELU, Linear 4C->C, layer scale `gamma`, residual."""

    def __init__(self, dim: int, kernel_size: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()  # the official module tree; forward computes it as `gelu_erf`
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # [N,H,W,C]
        y = linear_2d(lambda t: self.pwconv2(gelu_erf(self.pwconv1(t))), self.norm(y)) * self.gamma
        return x + y.permute(0, 3, 1, 2)


def gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """Exact (erf) GELU, as `nn.GELU()`, written x * (erf(x / sqrt 2) + 1) * 0.5: the operand order
    ONNX Runtime's GeluFusion matches. `nn.GELU` exports as 0.5 * x * (...), which it leaves as
    separate Erf, Add and Mul passes over the [N*H*W, 4C] tensor."""
    return (x * (torch.erf(x / math.sqrt(2.0)) + 1.0)) * 0.5


def linear_2d(layer, x: torch.Tensor) -> torch.Tensor:
    """`layer` (Linears and pointwise functions) on [..., C] through a 2-D [rows, C] view: a Linear on
    a 2-D input exports as one Gemm with its bias, where ONNX Runtime and OpenVINO run a MatMul and a
    separate bias Add over the whole tensor for higher ranks."""
    return layer(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)


class LinearAttentionLayer(nn.Module):
    """q, k, v projections and multi-head linear attention over a token sequence (official
    `AttentionLayer` without guidance); no output projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[S,T,C] -> [S,T,C]: S sequences (pixels) of T class tokens."""
        seqs, _, dim = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:  # [S,T,C] -> [S,H,T,d]
            return t.reshape(seqs, -1, self.num_heads, dim // self.num_heads).transpose(1, 2)

        out = class_attention(heads(linear_2d(self.q, x)), heads(linear_2d(self.k, x)), heads(linear_2d(self.v, x)))
        return out.transpose(1, 2).reshape(seqs, -1, dim)


def _class_tokens(x: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*T,C,h,w] -> [B*h*w,T,C]: at every pixel, the sequence of its T class features.

    Permutes first and splits the class axis afterwards. Splitting B*T into [B,T] with a Reshape
    right before the Transpose is the pattern of OpenVINO's ShuffleChannelsFusion, which throws on
    a dynamic T ("Cannot get length of dynamic dimension") and so kept the decoders from compiling
    with a dynamic class axis. Batch 1 (every exported stage) needs no split at all.
    """
    _, dim, height, width = x.shape
    tokens = x.permute(2, 3, 0, 1)  # [h,w,B*T,C]
    if batch == 1:
        return tokens.reshape(height * width, -1, dim)
    tokens = tokens.reshape(height * width, batch, -1, dim).transpose(0, 1)  # [B,h*w,T,C]
    return tokens.reshape(batch * height * width, -1, dim)


def _class_maps(tokens: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """The inverse of `_class_tokens`: [B*h*w,T,C] -> [B*T,C,h,w] (same ordering rule)."""
    dim = tokens.shape[-1]
    if batch == 1:
        return tokens.reshape(height, width, -1, dim).permute(2, 3, 0, 1)
    maps = tokens.reshape(batch, height * width, -1, dim).transpose(0, 1)  # [h*w,B,T,C]
    return maps.reshape(height, width, -1, dim).permute(2, 3, 0, 1)


class ClassAttentionLayer(nn.Module):
    """Transformer layer along the class axis (official `ClassTransformerLayer`).

    At every pixel the T class features form one sequence: pre-norm linear attention and a ReLU
    MLP, each with a residual. QUIRK kept from the original: the layer's output already holds its
    own residual and is added to the input once more, so the result is 2x + delta.

    With `pooling` p > 1 the layer runs on a p x p average-pooled map (floor, as AvgPool2d) and
    its output is resized back bilinearly with aligned corners before that last residual, as the
    official layer does: x + up(pool(x) + delta). The official configs train with p = 2 (and its
    demo runs so); its eval.sh, the published numbers and this project's default use p = 1, where
    pooling and resize are the identity and are left out of the graph.
    """

    def __init__(self, dim: int, num_heads: int, pooling: int = 1) -> None:
        super().__init__()
        self.pooling = pooling
        self.attention = LinearAttentionLayer(dim, num_heads)
        self.MLP = nn.Sequential(nn.Linear(dim, 4 * dim), nn.ReLU(), nn.Linear(4 * dim, dim))
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, batch: int) -> torch.Tensor:
        """[B*T,C,H,W] -> [B*T,C,H,W]."""
        _, dim, height, width = x.shape
        pooled = F.avg_pool2d(x, self.pooling) if self.pooling > 1 else x
        h, w = pooled.shape[-2:]
        tokens = _class_tokens(pooled, batch)  # [B*h*w, T, C]
        tokens = tokens + self.attention(self.norm1(tokens))
        tokens = tokens + linear_2d(self.MLP, self.norm2(tokens))
        out = _class_maps(tokens, batch, h, w)
        if self.pooling > 1:
            out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=True)
        return x + out


class DoubleConv(nn.Module):
    """(3x3 conv without bias -> GroupNorm(out/16 groups) -> ReLU) twice (official `DoubleConv`)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        groups = out_dim // 16
        self.double_conv = nn.Sequential(
            nn.Conv2d(in_dim, out_dim, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_dim),
            nn.ReLU(),
            nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False),
            nn.GroupNorm(groups, out_dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.double_conv(x)


class UpBlock(nn.Module):
    """One decoder scale (official `Up`): FAM (`cnext`, `attention`) then SFM (`up`, concat, `conv`).

    Args:
        in_dim: C, channels of the incoming class maps.
        out_dim: channels after the DoubleConv.
        guidance_dim: g, channels of each of the two guidance inputs; `up` makes C - g channels so
            that [up, image guidance, corr guidance] has C + g.
        num_heads: heads of the class attention.
        kernel_size: kernel of the ConvNeXt block's depthwise conv.
        pooling: p of the class attention's p x p pooling (1: none).
    """

    def __init__(self, in_dim: int, out_dim: int, guidance_dim: int, num_heads: int, kernel_size: int,
                 pooling: int = 1) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_dim, in_dim - guidance_dim, kernel_size=2, stride=2)
        self.conv = DoubleConv(in_dim + guidance_dim, out_dim)
        self.cnext = DecoderConvNeXtBlock(in_dim, kernel_size)
        self.attention = ClassAttentionLayer(in_dim, num_heads, pooling)

    def forward(self, x: torch.Tensor, guidance: torch.Tensor, corr_guidance: torch.Tensor) -> torch.Tensor:
        """Decode one scale.

        Args:
            x: class maps, [B*T,C,H,W].
            guidance: projected image guidance, [B,g,2H,2W] (shared by the T classes).
            corr_guidance: projected cost-map guidance, [B*T,g,2H,2W].

        Returns:
            [B*T,out_dim,2H,2W].
        """
        batch = guidance.shape[0]
        x = self.attention(self.cnext(x), batch)
        x = self.up(x)
        per_class = guidance.unsqueeze(1).expand(batch, x.shape[0] // batch, -1, -1, -1).flatten(0, 1)
        return self.conv(torch.cat([x, per_class, corr_guidance], dim=1))
