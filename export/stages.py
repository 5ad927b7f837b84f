"""The stage wrappers: thin modules that cut SED at the stage boundaries of the contract.

Each wrapper holds the model's own submodules; its `forward` takes exactly the graph's inputs, in
order, and returns a tuple in output order. `INPUTS`, `OUTPUTS` and `DYNAMIC` (axis names per
tensor) are the one place the graph names come from: the exporter, the manifest and so the
runtime all read them. Batch size is 1; the class axes are dynamic:

| stage         | inputs                                         | outputs                                    |
|---------------|------------------------------------------------|--------------------------------------------|
| image_encoder | image [1,3,S,S]                                | dense [1,D,s,s], guidance4/3/2             |
| text_encoder  | tokens [M,L] int64                             | text_embeddings [M,D]                      |
| cost          | dense, text [T,P,D]                            | volume [T,P,s,s], embedding, topk0 [K,s,s] |
| decoder1      | keep [T1] int32, embedding, volume, guidance4  | features1, corr_guidance1, topk1 [K,2s,2s] |
| decoder2      | keep [T2], features1, corr_guidance1, guidance3| features2, corr_guidance2, topk2 [K,4s,4s] |
| decoder3      | keep [T3], features2, corr_guidance2, guidance2| logits [T3,8s,8s]                          |

(s = S/32.) Each decoder stage first gathers its class-axis inputs by `keep`, so pruned tensors
never leave the device, and computes the cost-map guidance of the kept classes only. The top-k
outputs are the K best classes per pixel of the aux head (int32, best first); the class axis is
padded with -inf up to K so that K stays a constant of the graph even when T < K, and indices
>= T are padding that the runtime drops.
"""

from __future__ import annotations

import torch
from torch import nn

from sed_deploy.model.sed import SED

_PAD_LOGIT = -1e30


def topk_indices(logits: torch.Tensor, k: int) -> torch.Tensor:
    """[T,1,h,w] aux-head logits -> [k,h,w] int32 indices of the k best classes per pixel.

    The class axis is padded with `k` rows of -1e30 so TopK always has k candidates: a padded
    index (>= T) only appears when T < k.
    """
    scores = logits[:, 0]
    padding = scores.new_full((k, *scores.shape[1:]), _PAD_LOGIT)
    top = torch.topk(torch.cat([scores, padding], dim=0), k, dim=0).indices
    return top.to(torch.int32)


class Stage(nn.Module):
    """Common base: the graph's tensor names and the dynamic axis names per tensor."""

    NAME: str = ""
    INPUTS: tuple[str, ...] = ()
    OUTPUTS: tuple[str, ...] = ()
    DYNAMIC: dict[str, dict[int, str]] = {}
    TOPK_OUTPUT: str | None = None  # the top-k output, if any
    INT_INPUTS: dict[str, torch.dtype] = {}

    def __init__(self, model: SED, k: int) -> None:
        super().__init__()
        self.model = model
        self.k = k  # K of the top-k outputs

    def topk_logits(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The aux-head logits [T,h,w] behind this stage's top-k output (for validation)."""
        raise NotImplementedError


class ImageEncoderStage(Stage):
    NAME = "image_encoder"
    INPUTS = ("image",)
    OUTPUTS = ("dense", "guidance4", "guidance3", "guidance2")
    DYNAMIC = {}

    def forward(self, image: torch.Tensor):
        feats = self.model.encode_image(image)
        g4, g3, g2 = self.model.transformer.image_guidance(feats.res4, feats.res3, feats.res2)
        return feats.dense, g4, g3, g2


class TextEncoderStage(Stage):
    NAME = "text_encoder"
    INPUTS = ("tokens",)
    OUTPUTS = ("text_embeddings",)
    DYNAMIC = {"tokens": {0: "M", 1: "L"}, "text_embeddings": {0: "M"}}
    INT_INPUTS = {"tokens": torch.int64}

    def forward(self, tokens: torch.Tensor):
        return (self.model.encode_text(tokens),)


class CostStage(Stage):
    NAME = "cost"
    INPUTS = ("dense", "text")
    OUTPUTS = ("volume", "embedding", "topk0")
    DYNAMIC = {"text": {0: "T"}, "volume": {0: "T"}, "embedding": {0: "T"}}
    TOPK_OUTPUT = "topk0"

    def forward(self, dense: torch.Tensor, text: torch.Tensor):
        head = self.model.transformer
        volume = head.cost_volume(dense, text)
        embedding = head.embed_cost(volume)
        return volume, embedding, topk_indices(head.head0(embedding), self.k)

    def topk_logits(self, outputs):
        return self.model.transformer.head0(outputs[1])[:, 0]


class DecoderStage(Stage):
    """decoder1, decoder2 or decoder3: gather by `keep`, cost-map guidance, decode, aux head."""

    LEVEL = 0

    def forward(self, keep: torch.Tensor, features: torch.Tensor, corr: torch.Tensor, guidance: torch.Tensor):
        head = self.model.transformer
        level = self.LEVEL
        index = keep.to(torch.int64)
        corr_guidance = head.corr_guidance(level, corr.index_select(0, index))
        x = head.decoders[level](features.index_select(0, index), guidance, corr_guidance)
        if level == 2:
            return (head.head(x)[:, 0],)
        return x, corr_guidance, topk_indices(head.aux_heads[level + 1](x), self.k)

    def topk_logits(self, outputs):
        return self.model.transformer.aux_heads[self.LEVEL + 1](outputs[0])[:, 0]


class Decoder1Stage(DecoderStage):
    NAME = "decoder1"
    LEVEL = 0
    INPUTS = ("keep", "embedding", "volume", "guidance4")
    OUTPUTS = ("features1", "corr_guidance1", "topk1")
    DYNAMIC = {"keep": {0: "T1"}, "embedding": {0: "T"}, "volume": {0: "T"},
               "features1": {0: "T1"}, "corr_guidance1": {0: "T1"}}
    TOPK_OUTPUT = "topk1"
    INT_INPUTS = {"keep": torch.int32}


class Decoder2Stage(DecoderStage):
    NAME = "decoder2"
    LEVEL = 1
    INPUTS = ("keep", "features1", "corr_guidance1", "guidance3")
    OUTPUTS = ("features2", "corr_guidance2", "topk2")
    DYNAMIC = {"keep": {0: "T2"}, "features1": {0: "T1"}, "corr_guidance1": {0: "T1"},
               "features2": {0: "T2"}, "corr_guidance2": {0: "T2"}}
    TOPK_OUTPUT = "topk2"
    INT_INPUTS = {"keep": torch.int32}


class Decoder3Stage(DecoderStage):
    NAME = "decoder3"
    LEVEL = 2
    INPUTS = ("keep", "features2", "corr_guidance2", "guidance2")
    OUTPUTS = ("logits",)
    DYNAMIC = {"keep": {0: "T3"}, "features2": {0: "T2"}, "corr_guidance2": {0: "T2"}, "logits": {0: "T3"}}
    INT_INPUTS = {"keep": torch.int32}

    def topk_logits(self, outputs):
        raise NotImplementedError("decoder3 has no top-k output")


def tensor_shapes(config, k: int) -> dict[str, tuple[int | str, ...]]:
    """Shape of every graph tensor, dynamic axes by name (`keep` is per stage: T1, T2 or T3)."""
    s, d, p = config.feature_size, config.embed_dim, config.num_templates
    (f1, f2, _), (g1, g2, g3) = config.decoder_dims, config.guidance_dims
    return {
        "image": (1, 3, config.image_size, config.image_size),
        "dense": (1, d, s, s),
        "guidance4": (1, g1, 2 * s, 2 * s),
        "guidance3": (1, g2, 4 * s, 4 * s),
        "guidance2": (1, g3, 8 * s, 8 * s),
        "tokens": ("M", "L"),
        "text_embeddings": ("M", d),
        "text": ("T", p, d),
        "volume": ("T", p, s, s),
        "embedding": ("T", config.hidden_dim, s, s),
        "topk0": (k, s, s),
        "features1": ("T1", f1, 2 * s, 2 * s),
        "corr_guidance1": ("T1", g1, 2 * s, 2 * s),
        "topk1": (k, 2 * s, 2 * s),
        "features2": ("T2", f2, 4 * s, 4 * s),
        "corr_guidance2": ("T2", g2, 4 * s, 4 * s),
        "topk2": (k, 4 * s, 4 * s),
        "logits": ("T3", 8 * s, 8 * s),
    }


def stage_io_shapes(stage: type[Stage], config, k: int) -> dict[str, tuple[int | str, ...]]:
    """Shapes of one stage's inputs and outputs, in graph order."""
    table = tensor_shapes(config, k)
    shapes = {}
    for name in stage.INPUTS + stage.OUTPUTS:
        shapes[name] = (stage.DYNAMIC["keep"][0],) if name == "keep" else table[name]
    return shapes


STAGES: tuple[type[Stage], ...] = (
    ImageEncoderStage, TextEncoderStage, CostStage, Decoder1Stage, Decoder2Stage, Decoder3Stage,
)


def build_stages(model: SED, k: int) -> dict[str, Stage]:
    """One wrapper per stage around the same model, keyed by stage name, in pipeline order."""
    return {cls.NAME: cls(model, k) for cls in STAGES}
