"""The whole SED model: the CLIP encoders (`clip_model`) and the aggregator head (`transformer`).

Both inference modes of the original are here, on the same submodules the export stages wrap:
`forward` is the standard path (every class through every decoder, any batch size) and
`forward_cer` the fast path with category early rejection (batch 1; spec section 8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sed_deploy.core.errors import ConfigError

from .aggregator import Aggregator
from .clip import DenseFeatures, build_clip, dense_image_features, encode_tokens
from .config import SedConfig


@dataclass
class SedLogits:
    """Logits of the standard path, in the official order.

    Attributes:
        final: [B,T,S/4,S/4], the output head.
        aux0: [B,T,S/32,S/32], head0 on the cost embedding.
        aux1: [B,T,S/16,S/16], head1 on decoder1's output.
        aux2: [B,T,S/8,S/8], head2 on decoder2's output.
    """

    final: torch.Tensor
    aux0: torch.Tensor
    aux1: torch.Tensor
    aux2: torch.Tensor


@dataclass
class CerResult:
    """Output of the fast path for one image.

    Attributes:
        scores: [T,S/4,S/4] float32 sigmoid scores; classes rejected early score exactly 0.
        kept: class ids (int64, ascending, into the T classes) that entered decoder1, decoder2
            and decoder3.
    """

    scores: torch.Tensor
    kept: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def topk_union(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Classes that are among the k highest at some pixel: [T,h,w] -> sorted int64 indices.

    k is clipped to T, so a vocabulary smaller than k keeps every class.
    """
    top = torch.topk(logits, min(k, logits.shape[0]), dim=0).indices
    return torch.unique(top)


class SED(nn.Module):
    """SED with the official module names (`clip_model.*`, `transformer.*`)."""

    def __init__(self, config: SedConfig) -> None:
        super().__init__()
        self.config = config
        self.clip_model = build_clip(config)
        self.transformer = Aggregator(config)
        self.weights: dict = {}  # provenance, set by `build_sed`

    def encode_image(self, image: torch.Tensor) -> DenseFeatures:
        """[B,3,S,S] normalised image -> dense CLIP map and the res2..res4 guidance features."""
        return dense_image_features(self.clip_model, image)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """[M,L] token rows (L <= 77) -> [M,D] unit-normalised text embeddings."""
        return encode_tokens(self.clip_model, tokens)

    def forward(self, image: torch.Tensor, text: torch.Tensor) -> SedLogits:
        """Standard path.

        Args:
            image: [B,3,S,S] float32, CLIP-normalised (see `sed_deploy.runtime.preprocess`).
            text: [T,P,D] text embeddings of the vocabulary (P = 80 templates).
        """
        head = self.transformer
        feats = self.encode_image(image)
        guidance = head.image_guidance(feats.res4, feats.res3, feats.res2)
        corr = head.cost_volume(feats.dense, text)
        outputs = head.decode_all(head.embed_cost(corr), corr, guidance)
        batch = image.shape[0]
        return SedLogits(*(o.reshape(batch, -1, *o.shape[-2:]) for o in outputs))

    def forward_cer(self, image: torch.Tensor, text: torch.Tensor, topk: int | None = None) -> CerResult:
        """Fast path with category early rejection (the official `fast_conv_decoder`).

        Before each decoder, the aux head of the previous scale scores the classes still alive;
        a class survives if it is among the top-k at one pixel at least. Rejected classes are
        never decoded and score exactly 0.

        Args:
            image: [1,3,S,S] float32, CLIP-normalised.
            text: [T,P,D] text embeddings.
            topk: k (default: the config's, 8).
        """
        if image.shape[0] != 1:
            raise ConfigError(
                f"category early rejection runs on one image at a time (batch 1), got batch {image.shape[0]}; "
                "loop over the images or use the standard path"
            )
        k = self.config.topk if topk is None else topk
        if k < 1:
            raise ConfigError(f"top-k must be at least 1, got {k}")
        head = self.transformer
        feats = self.encode_image(image)
        guidance = head.image_guidance(feats.res4, feats.res3, feats.res2)
        corr = head.cost_volume(feats.dense, text)
        x, corr_guid = head.embed_cost(corr), corr
        alive = torch.arange(text.shape[0], device=text.device)
        kept = []
        for level, decoder in enumerate(head.decoders):
            keep = topk_union(head.aux_heads[level](x)[:, 0], k)
            alive = alive[keep]
            kept.append(alive)
            corr_guid = head.corr_guidance(level, corr_guid[keep])
            x = decoder(x[keep], guidance[level], corr_guid)
        logits = head.head(x)[:, 0]
        scores = logits.new_zeros((text.shape[0], *logits.shape[-2:]))
        scores[alive] = logits.sigmoid()
        return CerResult(scores=scores, kept=tuple(kept))
