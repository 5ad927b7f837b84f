"""Model configurations of SED: B and L as published, and `tiny` for fast tests.

Every number of B and L comes from the official configs (spec section 1). `tiny` runs the same code
paths (timm ConvNeXt trunk, open_clip text tower, the full decoder) at a small image size with a
small trunk and text tower, so the whole test suite stays fast on a 2-core CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from sed_deploy.core.errors import ConfigError
from sed_deploy.core.manifest import Preprocessing

# OpenAI CLIP normalisation in the 0-255 scale (spec section 2, step 2).
CLIP_PIXEL_MEAN = (122.7709383, 116.7460125, 104.09373615)
CLIP_PIXEL_STD = (68.5005327, 66.6321579, 70.3231630)


@dataclass(frozen=True)
class SedConfig:
    """Architecture and input settings of one SED variant.

    Attributes:
        name: registry name ("B", "L", "tiny").
        open_clip_name: the open_clip model the CLIP side follows (weights come from a checkpoint).
        trunk_dims: channels of the four ConvNeXt stages (res2..res5).
        trunk_depths: blocks per stage.
        embed_dim: D, the CLIP embedding width shared by text and dense image features.
        visual_head: "linear" (B: one bias-free Linear) or "mlp" (L: fc1, GELU, fc2).
        text_width, text_heads, text_layers: the causal text transformer.
        context_length, vocab_size: the CLIP tokenizer's context and vocabulary.
        image_size: the square side every image is resized to before CLIP (768 for B and L).
        short_side, max_long_side: detectron2's test-time ResizeShortestEdge, applied first.
        hidden_dim: channels of the cost embedding (`conv1` output).
        decoder_dims: output channels of decoder1..3.
        guidance_dims: output channels of the image and corr guidance projections per decoder.
        num_heads: heads of the class attention.
        decoder_kernel: kernel of the decoder ConvNeXt block's depthwise conv.
        num_templates: P, prompt templates (the channels of `conv1`; 80 in the original).
        topk: default k of category early rejection.
        attention_pooling: p of the p x p average pooling around every class-attention layer
            (official MODEL.SEM_SEG_HEAD.POOLING_SIZES): 1, no pooling, is the published evaluation
            (eval.sh overrides the configs); 2 is the official configs' value (training, demo).
            It changes no weight.
    """

    name: str
    open_clip_name: str
    trunk_dims: tuple[int, int, int, int]
    trunk_depths: tuple[int, int, int, int]
    embed_dim: int
    visual_head: str
    text_width: int
    text_heads: int
    text_layers: int
    context_length: int = 77
    vocab_size: int = 49408
    image_size: int = 768
    short_side: int = 640
    max_long_side: int = 2560
    hidden_dim: int = 128
    decoder_dims: tuple[int, int, int] = (64, 32, 16)
    guidance_dims: tuple[int, int, int] = (32, 16, 8)
    num_heads: int = 4
    decoder_kernel: int = 9
    num_templates: int = 80
    topk: int = 8
    attention_pooling: int = 1

    @property
    def feature_size(self) -> int:
        """Side of the dense CLIP map (stride 32): 24 for a 768 input."""
        return self.image_size // 32

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.image_size, self.short_side, self.max_long_side, CLIP_PIXEL_MEAN, CLIP_PIXEL_STD)

    def to_dict(self) -> dict:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


CONFIGS: dict[str, SedConfig] = {
    "B": SedConfig(
        name="B",
        open_clip_name="convnext_base_w_320",
        trunk_dims=(128, 256, 512, 1024),
        trunk_depths=(3, 3, 27, 3),
        embed_dim=640,
        visual_head="linear",
        text_width=640,
        text_heads=10,
        text_layers=12,
    ),
    "L": SedConfig(
        name="L",
        open_clip_name="convnext_large_d_320",
        trunk_dims=(192, 384, 768, 1536),
        trunk_depths=(3, 3, 27, 3),
        embed_dim=768,
        visual_head="mlp",
        text_width=768,
        text_heads=12,
        text_layers=16,
    ),
    "tiny": SedConfig(
        name="tiny",
        open_clip_name="",
        trunk_dims=(16, 32, 64, 128),
        trunk_depths=(1, 1, 1, 1),
        embed_dim=32,
        visual_head="linear",
        text_width=32,
        text_heads=2,
        text_layers=2,
        image_size=128,
        short_side=112,
        max_long_side=448,
    ),
}


POOLINGS = (1, 2)  # class-attention poolings offered: the published evaluation, the official demo


def get_config(backbone: str, attention_pooling: int = 1) -> SedConfig:
    """The configuration registered as `backbone` ("B", "L" or "tiny"), with that class-attention pooling."""
    try:
        config = CONFIGS[backbone]
    except KeyError:
        raise ConfigError(
            f"unknown backbone {backbone!r}; expected one of {', '.join(CONFIGS)}"
        ) from None
    if attention_pooling not in POOLINGS or isinstance(attention_pooling, bool):
        raise ConfigError(f"class-attention pooling must be one of {POOLINGS} (p of p x p), got {attention_pooling!r}")
    return replace(config, attention_pooling=attention_pooling)
