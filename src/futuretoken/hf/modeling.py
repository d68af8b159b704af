"""transformers wrappers around futuretoken's GPT and FTP modules.

`export_hf` copies this file into every exported folder as `modeling_futuretoken.py` and names
its classes in config.json's `auto_map`, so the folder also loads with `trust_remote_code=True`
(futuretoken must be installed). Keep imports here absolute for that reason.

- The wrapped `ft.GPT` / `ft.FTP` is the submodule `.model`: same tensors, same state-dict keys
  (prefixed `model.`). The output head *is* the token embedding, so there is nothing to tie.
- `*ForCausalLM` logits are our `model(idx).logits` (FTP: decoder step k = 1 at every position).
  `*Model` returns the encoder states h_t as `last_hidden_state` (for sentence-transformers).
- No KV cache: `generate()` re-encodes the whole sequence at every step (greedy output equals
  futuretoken's `ar`). Sequences are limited to block_size tokens (no sliding window).
- attention_mask may only mark right padding (ones then zeros): the encoder is causal, so real
  positions never see pads. Left padding or holes raise ValueError.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from futuretoken.config import ModelConfig
from futuretoken.model import MODELS, LanguageModel
from futuretoken.model.blocks import init_weights

_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))


class _FTConfig(PretrainedConfig):
    """A PretrainedConfig holding every ModelConfig field under its own name."""

    ft_model_type = ""
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                     "num_attention_heads": "n_head", "max_position_embeddings": "block_size"}

    def __init__(self, **kwargs: Any) -> None:
        values = ModelConfig(**{k: kwargs.pop(k) for k in _FIELDS if k in kwargs}).to_dict()  # validates
        for key, value in values.items():
            setattr(self, key, value)
        kwargs.setdefault("tie_word_embeddings", True)
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{k: getattr(self, k) for k in _FIELDS})


class GPTConfig(_FTConfig):
    model_type = "futuretoken-gpt"
    ft_model_type = "gpt"


class FTPConfig(_FTConfig):
    model_type = "futuretoken-ftp"
    ft_model_type = "ftp"


def check_attention_mask(mask: Tensor | None) -> None:
    """Accept no mask or right padding only (each row: ones, then zeros)."""
    if mask is not None and mask.dim() == 2 and bool((mask[:, 1:] > mask[:, :-1]).any()):
        raise ValueError(
            "futuretoken models support right padding only (attention_mask rows of ones then zeros); "
            "left padding or masked holes are unsupported: set tokenizer.padding_side='right', or "
            "batch prompts of equal length / generate them one at a time"
        )


class _FTPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]
    _supports_cache_class = False

    def __init__(self, config: _FTConfig) -> None:
        super().__init__(config)
        self.model: LanguageModel = MODELS[config.ft_model_type](config.to_model_config())
        self.post_init()

    @classmethod
    def from_module(cls, module: LanguageModel) -> "_FTPreTrainedModel":
        """Wrap a futuretoken GPT/FTP module: the wrapper's `.model` is `module` itself (same tensors)."""
        config = cls.config_class(**module.config.to_dict())
        if config.ft_model_type != module.model_type:
            raise ValueError(f"{cls.__name__} wraps '{config.ft_model_type}' models, got a '{module.model_type}' model")
        with torch.device("meta"):  # post_init (re)initialises weights: do it on a throwaway meta module
            wrapper = cls(config)
        wrapper.model = module
        return wrapper.train(module.training)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):  # futuretoken's GPT-2 init
            c = self.config
            init_weights(module, c.n_layer + (c.dec_layer if c.ft_model_type == "ftp" else 0))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.encoder.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.encoder.wte = value

    def _check_inputs(self, input_ids: Tensor | None, attention_mask: Tensor | None, kwargs: dict) -> Tensor:
        if input_ids is None or kwargs.get("inputs_embeds") is not None:
            raise ValueError("futuretoken models take input_ids (inputs_embeds are unsupported)")
        check_attention_mask(attention_mask)
        return input_ids


class _FTModel(_FTPreTrainedModel):
    """Encoder states h_t (after the final LayerNorm) as last_hidden_state."""

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                **kwargs: Any) -> BaseModelOutputWithPast:
        h = self.model.encoder(self._check_inputs(input_ids, attention_mask, kwargs))  # (B, T, d)
        hidden_states = (h,) if kwargs.get("output_hidden_states") else None
        return BaseModelOutputWithPast(last_hidden_state=h, hidden_states=hidden_states)


class _FTForCausalLM(_FTPreTrainedModel, GenerationMixin):
    """Next-token logits (B, T, V); `labels` gives the mean shifted cross-entropy (ignore index -100)."""

    def __init__(self, config: _FTConfig) -> None:
        super().__init__(config)
        self.generation_config.use_cache = False  # no KV cache: every step re-encodes the sequence

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                labels: Tensor | None = None, past_key_values: Any = None, use_cache: bool | None = None,
                **kwargs: Any) -> CausalLMOutputWithPast:
        out = self.model(self._check_inputs(input_ids, attention_mask, kwargs))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(out.logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=out.logits, past_key_values=None,
                                      hidden_states=(out.hidden,) if kwargs.get("output_hidden_states") else None)

    def prepare_inputs_for_generation(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                                      **kwargs: Any) -> dict[str, Any]:
        # Always the whole sequence: there is no cache to continue from.
        return {"input_ids": input_ids, "attention_mask": attention_mask}


class GPTModel(_FTModel):
    config_class = GPTConfig


class FTPModel(_FTModel):
    config_class = FTPConfig


class GPTForCausalLM(_FTForCausalLM):
    config_class = GPTConfig


class FTPForCausalLM(_FTForCausalLM):
    config_class = FTPConfig


CONFIGS: dict[str, type[_FTConfig]] = {"gpt": GPTConfig, "ftp": FTPConfig}
CAUSAL_LM: dict[str, type[_FTForCausalLM]] = {"gpt": GPTForCausalLM, "ftp": FTPForCausalLM}
BASE_MODELS: dict[str, type[_FTModel]] = {"gpt": GPTModel, "ftp": FTPModel}

__all__ = ["BASE_MODELS", "CAUSAL_LM", "CONFIGS", "FTPConfig", "FTPForCausalLM", "FTPModel", "GPTConfig",
           "GPTForCausalLM", "GPTModel", "check_attention_mask"]
