"""PyTorch SED: CLIP ConvNeXt encoders, cost volume, gradual fusion decoder, CER, checkpoints, configs.

`build_sed(backbone, checkpoint=None, seed=0)` returns the model in eval mode; its `state_dict()`
has the official names (below the detectron2 prefix `sem_seg_head.predictor.`).
"""

from .build import RandomWeightsWarning, build_sed
from .config import CONFIGS, SedConfig, get_config
from .sed import SED, CerResult, SedLogits, topk_union

__all__ = [
    "CONFIGS",
    "SED",
    "CerResult",
    "RandomWeightsWarning",
    "SedConfig",
    "SedLogits",
    "build_sed",
    "get_config",
    "topk_union",
]
