"""futuretoken: Future Token Prediction (FTP) language models and a matched GPT baseline."""

from .config import ConfigError, ModelConfig
from .model import FTP, GPT, MODELS, KVCache, LanguageModel, LossOutput, ModelOutput, training_flops_per_token

__version__ = "0.1.0"

__all__ = [
    "FTP", "GPT", "MODELS", "ConfigError", "KVCache", "LanguageModel", "LossOutput", "ModelConfig",
    "ModelOutput", "training_flops_per_token", "__version__",
]
