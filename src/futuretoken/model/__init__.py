from ..config import ModelConfig
from .base import LanguageModel, ModelOutput
from .blocks import KVCache
from .ftp import FTP
from .gpt import GPT
from .loss import IGNORE, LossOutput, future_targets
from .mtp import MTP
from .mtp_seq import MTPSeq

# Every model type, by its `model_type` (config.MODEL_TYPES lists the same names for validation).
MODELS: dict[str, type[LanguageModel]] = {cls.model_type: cls for cls in (GPT, FTP, MTP, MTPSeq)}


def forward_flops_per_token(c: ModelConfig, model_type: str) -> float:
    """Forward FLOPs per input token of `model_type` with config `c` (model/flops.py)."""
    if model_type not in MODELS:
        raise ValueError(f"unknown model type '{model_type}'; expected one of {', '.join(MODELS)}")
    return MODELS[model_type].forward_flops_per_token(c)


def training_flops_per_token(c: ModelConfig, model_type: str) -> float:
    """Forward + backward FLOPs per input token (3x forward: MTP's sequential backward recomputes nothing)."""
    return 3 * forward_flops_per_token(c, model_type)

__all__ = [
    "FTP", "GPT", "IGNORE", "KVCache", "LanguageModel", "LossOutput", "MODELS", "MTP", "MTPSeq", "ModelOutput",
    "forward_flops_per_token", "future_targets", "training_flops_per_token",
]
