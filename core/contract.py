"""The stage contract as data: the one place stage and tensor names, their order and their limits live.

SED runs as six graphs. Per image: `image_encoder`, `cost`, `decoder1`, `decoder2`, `decoder3`; per
vocabulary: `text_encoder`. Each stage's inputs are found by name among the outputs of the stages
before it, plus `keep` (formed on the host) and `text` (the vocabulary's embeddings):

| stage         | inputs                                          | outputs                                    |
|---------------|-------------------------------------------------|--------------------------------------------|
| image_encoder | image [1,3,S,S]                                 | dense [1,D,s,s], guidance4/3/2             |
| text_encoder  | tokens [M,L] int64                              | text_embeddings [M,D]                      |
| cost          | dense, text [T,P,D]                             | volume [T,P,s,s], embedding, topk0 [K,s,s] |
| decoder1      | keep [T1] int32, embedding, volume, guidance4   | features1, corr_guidance1, topk1 [K,2s,2s] |
| decoder2      | keep [T2], features1, corr_guidance1, guidance3 | features2, corr_guidance2, topk2 [K,4s,4s] |
| decoder3      | keep [T3], features2, corr_guidance2, guidance2 | logits [T3,8s,8s]                          |

(s = S/32.) A stage with a `keep` input prunes: the runtime forms `keep` from the top-k map of the
stage before (`Stage.keep_from`) and the stage gathers its class-axis inputs by it on the device.
Everything else (the exporter's wrappers, the manifest schema, the runtime's loop, the engine
builder's profiles, the server's repository) reads these tables instead of spelling the names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# tensors the host feeds or reads by name
IMAGE = "image"
TEXT = "text"
TOKENS = "tokens"
TEXT_EMBEDDINGS = "text_embeddings"
KEEP = "keep"
LOGITS = "logits"

# the stages, in the order the pipeline runs them
IMAGE_ENCODER = "image_encoder"
TEXT_ENCODER = "text_encoder"
COST = "cost"
DECODER1, DECODER2, DECODER3 = "decoder1", "decoder2", "decoder3"

# class-axis names: T classes enter `cost`, T1..T3 survive into decoder1..3; M prompts; L tokens
CLASS_AXIS, PROMPT_AXIS, TOKEN_AXIS = "T", "M", "L"


@dataclass(frozen=True)
class Stage:
    """One stage graph of the contract.

    Attributes:
        name: the stage (and graph file) name.
        inputs: input tensor names, in graph order.
        outputs: output tensor names, in graph order.
        dynamic: per tensor, its dynamic axes by position -> axis name.
        topk_output: the top-k index map this stage writes, if any (what the next stage prunes by).
        keep_from: for a pruning stage (one with a `keep` input), the top-k output of the stage
            before it, from which the runtime forms `keep`.
        level: decoder level 0, 1, 2 for decoder1..3; None for the other stages.
    """

    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic: dict[str, dict[int, str]] = field(default_factory=dict)
    topk_output: str | None = None
    keep_from: str | None = None
    level: int | None = None

    @property
    def prunes(self) -> bool:
        """True when the stage takes `keep` (its class axis is cut by the runtime before it runs)."""
        return KEEP in self.inputs

    @property
    def class_axis(self) -> str | None:
        """The name of the class axis of this stage's `keep` (T1, T2, T3), None if it does not prune."""
        return self.dynamic[KEEP][0] if self.prunes else None


def _decoder(level: int, previous: tuple[str, str], guidance: str) -> Stage:
    """decoder1..3: gather by `keep`, decode; the last one writes the logits."""
    axis, before = f"{CLASS_AXIS}{level + 1}", f"{CLASS_AXIS}{level}" if level else CLASS_AXIS
    inputs = (KEEP, *previous, guidance)
    last = level == 2
    outputs = (LOGITS,) if last else (f"features{level + 1}", f"corr_guidance{level + 1}", f"topk{level + 1}")
    dynamic = {KEEP: {0: axis}, previous[0]: {0: before}, previous[1]: {0: before}}
    dynamic.update({name: {0: axis} for name in outputs if not name.startswith("topk")})
    return Stage(f"decoder{level + 1}", inputs, outputs, dynamic, topk_output=None if last else outputs[-1],
                 keep_from=f"topk{level}", level=level)


STAGES: tuple[Stage, ...] = (
    Stage(IMAGE_ENCODER, (IMAGE,), ("dense", "guidance4", "guidance3", "guidance2")),
    Stage(TEXT_ENCODER, (TOKENS,), (TEXT_EMBEDDINGS,),
          {TOKENS: {0: PROMPT_AXIS, 1: TOKEN_AXIS}, TEXT_EMBEDDINGS: {0: PROMPT_AXIS}}),
    Stage(COST, ("dense", TEXT), ("volume", "embedding", "topk0"),
          {TEXT: {0: CLASS_AXIS}, "volume": {0: CLASS_AXIS}, "embedding": {0: CLASS_AXIS}}, topk_output="topk0"),
    _decoder(0, ("embedding", "volume"), "guidance4"),
    _decoder(1, ("features1", "corr_guidance1"), "guidance3"),
    _decoder(2, ("features2", "corr_guidance2"), "guidance2"),
)
STAGE = {stage.name: stage for stage in STAGES}
STAGE_ORDER: tuple[str, ...] = tuple(STAGE)
TEXT_STAGE = TEXT_ENCODER
# The stages run per image. The text stage runs once per vocabulary and always in fp32: the embedding
# cache holds fp32 results, keyed by the fp32 text weights, whatever precision the image stages use.
IMAGE_STAGES: tuple[str, ...] = tuple(s for s in STAGE_ORDER if s != TEXT_STAGE)
DECODERS: tuple[str, ...] = tuple(s.name for s in STAGES if s.prunes)
TOPK_OUTPUTS: tuple[str, ...] = tuple(s.topk_output for s in STAGES if s.topk_output)

# dtypes: everything is float (float32, or float16 in fp16 graphs) but these
INTEGER_TENSORS: dict[str, str] = {TOKENS: "int64", KEEP: "int32", **{name: "int32" for name in TOPK_OUTPUTS}}
DTYPES = ("float32", "float16", "int32", "int64")

# TensorRT's TopK takes K < 3840 (trt-notes: ITopKLayer); every graph's K stays below it
TOPK_LIMIT = 3840
MAX_TOPK = TOPK_LIMIT - 1
DEFAULT_TOPK = 8  # k of category early rejection, as the official fast path
MAX_TEMPLATES = 80  # CLIP's ImageNet prompt templates (P)
CONTEXT_LENGTH = 77  # CLIP's text context
SOT_TOKEN, EOT_TOKEN = 49406, 49407  # CLIP's start and end of text

# folder names inside an artifacts folder (and a cache folder)
MANIFEST_NAME = "manifest.json"
TEXT_FOLDER = "text"  # vocabulary embeddings
ENGINES_FOLDER = "engines"  # TensorRT engines built by sed-build


def stage_spec(name: str) -> Stage:
    """The contract's stage `name` (KeyError for a name that is not a stage: a bug, not a user error)."""
    return STAGE[name]


def tensor_shapes(config: Any, k: int) -> dict[str, tuple[int | str, ...]]:
    """Shape of every graph tensor, dynamic axes by name (`keep` is per stage: see `stage_io_shapes`).

    Args:
        config: the model configuration (`image_size`, `feature_size`, `embed_dim`, `num_templates`,
            `hidden_dim`, `decoder_dims`, `guidance_dims`: any object with these attributes).
        k: K of the top-k outputs.
    """
    s, d, p = config.feature_size, config.embed_dim, config.num_templates
    (f1, f2, _), (g1, g2, g3) = config.decoder_dims, config.guidance_dims
    t, t1, t2, t3 = CLASS_AXIS, *(STAGE[name].class_axis for name in DECODERS)
    return {
        IMAGE: (1, 3, config.image_size, config.image_size),
        "dense": (1, d, s, s),
        "guidance4": (1, g1, 2 * s, 2 * s),
        "guidance3": (1, g2, 4 * s, 4 * s),
        "guidance2": (1, g3, 8 * s, 8 * s),
        TOKENS: (PROMPT_AXIS, TOKEN_AXIS),
        TEXT_EMBEDDINGS: (PROMPT_AXIS, d),
        TEXT: (t, p, d),
        "volume": (t, p, s, s),
        "embedding": (t, config.hidden_dim, s, s),
        "topk0": (k, s, s),
        "features1": (t1, f1, 2 * s, 2 * s),
        "corr_guidance1": (t1, g1, 2 * s, 2 * s),
        "topk1": (k, 2 * s, 2 * s),
        "features2": (t2, f2, 4 * s, 4 * s),
        "corr_guidance2": (t2, g2, 4 * s, 4 * s),
        "topk2": (k, 4 * s, 4 * s),
        LOGITS: (t3, 8 * s, 8 * s),
    }


def stage_io_shapes(name: str, config: Any, k: int) -> dict[str, tuple[int | str, ...]]:
    """Shapes of one stage's inputs and outputs, in graph order."""
    stage, table = STAGE[name], tensor_shapes(config, k)
    return {tensor: (stage.class_axis,) if tensor == KEEP else table[tensor]
            for tensor in stage.inputs + stage.outputs}


def tensor_dtype(name: str, float_dtype: str = "float32") -> str:
    """The dtype of graph tensor `name`: its integer type, else `float_dtype`."""
    return INTEGER_TENSORS.get(name, float_dtype)
