from .base import LanguageModel, ModelOutput
from .blocks import KVCache
from .flops import forward_flops_per_token, training_flops_per_token
from .ftp import FTP
from .gpt import GPT
from .loss import IGNORE, LossOutput, future_targets
from .mtp import MTP
from .mtp_seq import MTPSeq

MODELS = {"gpt": GPT, "ftp": FTP, "mtp": MTP, "mtp_seq": MTPSeq}  # keys: config.MODEL_TYPES

__all__ = [
    "FTP", "GPT", "IGNORE", "KVCache", "LanguageModel", "LossOutput", "MODELS", "MTP", "MTPSeq", "ModelOutput",
    "forward_flops_per_token", "future_targets", "training_flops_per_token",
]
