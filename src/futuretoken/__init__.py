"""futuretoken: Future Token Prediction (FTP) language models and a matched GPT baseline."""

__version__ = "0.1.0"

from .config import ConfigError, DataConfig, ModelConfig, RunConfig, TrainConfig
from .data import load_tokenizer, prepare
from .infer import SamplingConfig, embed, generate
from .model import FTP, GPT, MODELS, KVCache, LanguageModel, LossOutput, ModelOutput, training_flops_per_token
from .train import load_model as load
from .train import train

__all__ = [
    "FTP", "GPT", "MODELS", "ConfigError", "DataConfig", "KVCache", "LanguageModel", "LossOutput", "ModelConfig",
    "ModelOutput", "RunConfig", "SamplingConfig", "TrainConfig", "__version__", "embed", "generate", "load",
    "load_tokenizer", "prepare", "train", "training_flops_per_token",
]
