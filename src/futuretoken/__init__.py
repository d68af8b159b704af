"""futuretoken: Future Token Prediction (FTP) language models, a matched GPT baseline and multi-token
prediction (MTP: parallel heads; MTP-seq: sequential modules) trained side by side."""

from .checkpoint import load_model as load
from .config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import load_tokenizer, prepare
from .infer import SamplingConfig, embed, encode, generate, generate_text
from .model import (
    FTP,
    GPT,
    MODELS,
    MTP,
    KVCache,
    LanguageModel,
    LossOutput,
    ModelOutput,
    MTPSeq,
    training_flops_per_token,
)
from .training import train
from .version import __version__

__all__ = [
    "FTP", "GPT", "MODELS", "MTP", "ConfigError", "MTPSeq", "DataConfig", "KVCache", "LanguageModel", "LossOutput", "ModelConfig",
    "ModelOutput", "RunConfig", "SamplingConfig", "TrainConfig", "__version__", "embed", "encode", "generate",
    "generate_text", "load", "load_tokenizer", "prepare", "train", "training_flops_per_token",
]
