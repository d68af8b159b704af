"""futuretoken: Future Token Prediction (FTP) language models, a matched GPT baseline and multi-token
prediction (MTP: parallel heads; MTP-seq: sequential modules) trained side by side.

The names below are imported on first use (PEP 562), so `import futuretoken` and the command
line's `--help` start without loading torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .version import __version__

# name -> (module, attribute)
_EXPORTS = {
    "load": ("checkpoint", "load_model"),
    **{name: ("config", name) for name in ("ConfigError", "DataConfig", "ModelConfig", "RunConfig", "TrainConfig")},
    **{name: ("data", name) for name in ("load_tokenizer", "prepare")},
    **{name: ("infer", name) for name in ("SamplingConfig", "embed", "encode", "generate", "generate_text")},
    **{name: ("model", name) for name in ("FTP", "GPT", "MODELS", "MTP", "KVCache", "LanguageModel", "LossOutput",
                                          "ModelOutput", "MTPSeq", "training_flops_per_token")},
    "train": ("training", "train"),
}

__all__ = [  # _EXPORTS and the version (a literal list, so that linters see what is exported)
    "FTP", "GPT", "MODELS", "MTP", "ConfigError", "DataConfig", "KVCache", "LanguageModel", "LossOutput", "MTPSeq",
    "ModelConfig", "ModelOutput", "RunConfig", "SamplingConfig", "TrainConfig", "__version__", "embed", "encode",
    "generate", "generate_text", "load", "load_tokenizer", "prepare", "train", "training_flops_per_token",
]


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'futuretoken' has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(import_module(f".{module}", __name__), attribute)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:  # what type checkers and editors see
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
