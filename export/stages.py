"""The stage wrappers: thin modules that cut SED at the stage boundaries of the contract.

Each wrapper holds the model's own submodules; its `forward` takes exactly the graph's inputs, in
order, and returns a tuple in output order. The names, order and dynamic axes come from the stage
contract (`core.contract`), which the exporter, the manifest and so the runtime all read. Batch size
is 1; the class axes are dynamic. Each decoder stage first gathers its class-axis inputs by `keep`,
so pruned tensors never leave the device, and computes the cost-map guidance of the kept classes
only. The top-k outputs are the K best classes per pixel of the aux head (int32, best first); the
class axis is padded with -inf up to K so that K stays a constant of the graph even when T < K, and
indices >= T are padding that the runtime drops.
"""

from __future__ import annotations

import torch
from torch import nn

from sed_deploy.core import contract
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
    """Common base: the contract's description of this stage (`core.contract.Stage`)."""

    CONTRACT: contract.Stage
    INT_INPUTS: dict[str, torch.dtype] = {}

    def __init__(self, model: SED, k: int) -> None:
        super().__init__()
        self.model = model
        self.k = k  # K of the top-k outputs

    @property
    def name(self) -> str:
        return self.CONTRACT.name

    def topk_logits(self, outputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The aux-head logits [T,h,w] behind this stage's top-k output (for validation)."""
        raise NotImplementedError


_TORCH_DTYPES = {"int32": torch.int32, "int64": torch.int64}


def _integer_inputs(stage: contract.Stage) -> dict[str, torch.dtype]:
    return {name: _TORCH_DTYPES[contract.INTEGER_TENSORS[name]] for name in stage.inputs
            if name in contract.INTEGER_TENSORS}


class ImageEncoderStage(Stage):
    CONTRACT = contract.STAGE[contract.IMAGE_ENCODER]

    def forward(self, image: torch.Tensor):
        feats = self.model.encode_image(image)
        g4, g3, g2 = self.model.transformer.image_guidance(feats.res4, feats.res3, feats.res2)
        return feats.dense, g4, g3, g2


class TextEncoderStage(Stage):
    CONTRACT = contract.STAGE[contract.TEXT_ENCODER]
    INT_INPUTS = _integer_inputs(CONTRACT)

    def forward(self, tokens: torch.Tensor):
        return (self.model.encode_text(tokens),)


class CostStage(Stage):
    CONTRACT = contract.STAGE[contract.COST]

    def forward(self, dense: torch.Tensor, text: torch.Tensor):
        head = self.model.transformer
        volume = head.cost_volume(dense, text)
        embedding = head.embed_cost(volume)
        return volume, embedding, topk_indices(head.head0(embedding), self.k)

    def topk_logits(self, outputs):
        return self.model.transformer.head0(outputs[1])[:, 0]


class DecoderStage(Stage):
    """decoder1, decoder2 or decoder3: gather by `keep`, cost-map guidance, decode, aux head."""

    def forward(self, keep: torch.Tensor, features: torch.Tensor, corr: torch.Tensor, guidance: torch.Tensor):
        head = self.model.transformer
        level = self.CONTRACT.level
        index = keep.to(torch.int64)
        corr_guidance = head.corr_guidance(level, corr.index_select(0, index))
        x = head.decoders[level](features.index_select(0, index), guidance, corr_guidance)
        if self.CONTRACT.topk_output is None:  # the last decoder: logits
            return (head.head(x)[:, 0],)
        return x, corr_guidance, topk_indices(head.aux_heads[level + 1](x), self.k)

    def topk_logits(self, outputs):
        if self.CONTRACT.topk_output is None:
            raise NotImplementedError(f"{self.name} has no top-k output")
        return self.model.transformer.aux_heads[self.CONTRACT.level + 1](outputs[0])[:, 0]


def _decoder_stage(name: str) -> type[DecoderStage]:
    spec = contract.STAGE[name]
    return type(f"{name.capitalize()}Stage", (DecoderStage,), {"CONTRACT": spec, "INT_INPUTS": _integer_inputs(spec)})


STAGES: tuple[type[Stage], ...] = (
    ImageEncoderStage, TextEncoderStage, CostStage, *(_decoder_stage(name) for name in contract.DECODERS),
)
assert tuple(cls.CONTRACT.name for cls in STAGES) == contract.STAGE_ORDER


def build_stages(model: SED, k: int) -> dict[str, Stage]:
    """One wrapper per stage around the same model, keyed by stage name, in pipeline order."""
    return {cls.CONTRACT.name: cls(model, k) for cls in STAGES}
