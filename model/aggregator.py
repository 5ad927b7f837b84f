"""SED's head after the CLIP encoders (official `Aggregator`, stored as `transformer.*`).

It owns the cosine cost volume, its `conv1` embedding, the image and cost-map guidance projections,
the three decoder blocks and the four 3x3 heads (head0..head2 on the intermediate scales, `head`
on the last). Each step is its own method so that the export stages and the unstaged model call
exactly the same code (spec sections 5, 6, 8).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import SedConfig
from .decoder import UpBlock
from .ops import l2_normalize


class Aggregator(nn.Module):
    """Cost volume, cost embedding, guidance projections, decoders and heads."""

    def __init__(self, config: SedConfig) -> None:
        super().__init__()
        hidden, dec, guid = config.hidden_dim, config.decoder_dims, config.guidance_dims
        res4, res3, res2 = config.trunk_dims[2], config.trunk_dims[1], config.trunk_dims[0]
        self.conv1 = nn.Conv2d(config.num_templates, hidden, kernel_size=7, padding=3)
        self.decoder_guidance_projection = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, g, kernel_size=3, padding=1), nn.ReLU())
            for c, g in zip((res4, res3, res2), guid, strict=True)
        )
        self.decoder_corr_guidance_projection = nn.ModuleList(
            nn.Sequential(nn.ConvTranspose2d(c, g, kernel_size=2, stride=2), nn.ReLU())
            for c, g in zip((config.num_templates, guid[0], guid[1]), guid, strict=True)
        )
        heads, kernel, pool = config.num_heads, config.decoder_kernel, config.attention_pooling
        self.decoder1 = UpBlock(hidden, dec[0], guid[0], heads, kernel, pool)
        self.decoder2 = UpBlock(dec[0], dec[1], guid[1], heads, kernel, pool)
        self.decoder3 = UpBlock(dec[1], dec[2], guid[2], heads, kernel, pool)
        self.head0 = nn.Conv2d(hidden, 1, kernel_size=3, padding=1)
        self.head1 = nn.Conv2d(dec[0], 1, kernel_size=3, padding=1)
        self.head2 = nn.Conv2d(dec[1], 1, kernel_size=3, padding=1)
        self.head = nn.Conv2d(dec[2], 1, kernel_size=3, padding=1)

    @property
    def decoders(self) -> tuple[UpBlock, UpBlock, UpBlock]:
        return (self.decoder1, self.decoder2, self.decoder3)

    @property
    def aux_heads(self) -> tuple[nn.Conv2d, nn.Conv2d, nn.Conv2d]:
        """head0 (on the cost embedding), head1 and head2 (on decoder1 and decoder2 outputs)."""
        return (self.head0, self.head1, self.head2)

    @staticmethod
    def cost_volume(dense: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every pixel with every (class, template) text embedding.

        Args:
            dense: dense CLIP map, [B,D,h,w].
            text: text embeddings, [T,P,D].

        Returns:
            [B*T,P,h,w], classes flattened batch-major. No temperature.
        """
        batch, dim, height, width = dense.shape
        num_templates = text.shape[1]
        image = l2_normalize(dense, dim=1).reshape(batch, dim, height * width)
        text = l2_normalize(text, dim=-1).reshape(-1, dim)  # [T*P, D]
        corr = torch.matmul(text, image)  # [B, T*P, h*w]
        return corr.reshape(-1, num_templates, height, width)

    def embed_cost(self, corr: torch.Tensor) -> torch.Tensor:
        """`conv1` on every class's [P,h,w] volume: [B*T,P,h,w] -> [B*T,hidden,h,w]."""
        return self.conv1(corr)

    def image_guidance(
        self, res4: torch.Tensor, res3: torch.Tensor, res2: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-image guidance for decoder1..3: [B,g1,S/16,S/16], [B,g2,S/8,S/8], [B,g3,S/4,S/4]."""
        return tuple(proj(x) for proj, x in zip(self.decoder_guidance_projection, (res4, res3, res2), strict=True))

    def corr_guidance(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Step `level` (0, 1, 2) of the cost-map guidance chain (ConvTranspose 2x + ReLU, per class).

        Level 0 takes the raw volume [B*T,P,h,w]; level i > 0 takes the output of level i - 1.
        """
        return self.decoder_corr_guidance_projection[level](x)

    def decode_all(
        self,
        embedding: torch.Tensor,
        corr: torch.Tensor,
        guidance: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Standard path (every class through every decoder).

        Args:
            embedding: `conv1` output, [B*T,hidden,h,w].
            corr: raw cosine volume, [B*T,P,h,w].
            guidance: `image_guidance` outputs.

        Returns:
            (final, aux0, aux1, aux2) logits, [B*T,1,...] at strides 4, 32, 16, 8 of the image.
        """
        x, corr_guid = embedding, corr
        aux = []
        for level, decoder in enumerate(self.decoders):
            aux.append(self.aux_heads[level](x))
            corr_guid = self.corr_guidance(level, corr_guid)
            x = decoder(x, guidance[level], corr_guid)
        return (self.head(x), *aux)
