"""transformers wrappers around futuretoken's GPT, FTP, MTP and MTP-seq modules.

`save_pretrained` (and so `export_hf` and `push_to_hub`) writes beside the weights a self-contained
copy of this file and of the futuretoken model code it uses, `modeling_futuretoken.py`
(hf/standalone.py), and names its classes in config.json's `auto_map`: the folder loads with
`trust_remote_code=True` where only torch and transformers are installed, as the Hub expects.

- The wrapped `ft.GPT` / `ft.FTP` / `ft.MTP` / `ft.MTPSeq` is the submodule `.model`: same tensors,
  same state-dict keys (prefixed `model.`). The output head *is* the token embedding, so there is
  nothing to tie.
- `*ForCausalLM` logits are our `model(idx).logits` (FTP: decoder step k = 1 at every position,
  or at the last `logits_to_keep`; MTP and MTP-seq: their next-token path, a GPT, whose weights
  hold the extra heads / modules too). `*Model` returns the encoder states h_t as `last_hidden_state`.
- KV cache: transformers' Cache API (a DynamicCache by default) holds the encoder's keys and values;
  FTP's next-token distribution is decoder step 1 from h of the last position, so only the encoder
  needs a cache. Greedy `generate()` equals futuretoken's `ar` with and without cache.
- attention_mask (2D, one column per cached and new token) may mark any padding, left padding
  included: masked keys are never attended to, and positions count real tokens only (a left-padded
  row starts at position 0), so a padded row gives what it gives alone.
- `labels` give transformers' causal-LM loss (shifted, ignore index -100, `num_items_in_batch` and
  `shift_labels` honoured), for FTP on decoder step 1: the multi-token objectives are `futuretoken train`.
- Sequences are limited to block_size tokens (no sliding window).
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.utils.generic import can_return_tuple

from futuretoken.config import ModelConfig
from futuretoken.model import MODELS, LanguageModel
from futuretoken.model.blocks import init_module
from futuretoken.model.encoder import Trace

MODELING_FILE = "modeling_futuretoken.py"
SELF_CONTAINED = False  # True in the generated copy (hf/standalone.py), which then saves itself

_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# transformers >= 5.24 names the cache argument and output field `cache` (before: `past_key_values`); generate()
# passes it under the installed version's name, so forward takes both and outputs fill the field that exists.
CACHE_FIELD = "cache" if "cache" in {f.name for f in dataclasses.fields(CausalLMOutputWithPast)} else "past_key_values"


def _old_cache_name(forward):
    """Where the cache is called `cache`, `past_key_values=` still works with transformers' own deprecation
    warning, as in its models (it arrives as `cache`)."""
    if CACHE_FIELD == "past_key_values":
        return forward
    from transformers.utils.deprecation import deprecate_kwarg

    return deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")(forward)
LOSS_OPTIONS = ("num_items_in_batch", "shift_labels", "ignore_index")  # transformers' ForCausalLMLoss keywords

# Every ModelConfig field under its own name, type and default: transformers 5 configs are
# dataclasses, so defaults must be fields (a custom __init__ would be bypassed by subclasses).
_ModelFields = dataclasses.make_dataclass(
    "_ModelFields", [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(ModelConfig)],
    kw_only=True, repr=False,
)


class _FTConfig(PretrainedConfig, _ModelFields):
    """A PretrainedConfig holding every ModelConfig field; built from any subset of them, validated."""

    ft_model_type = ""
    attribute_map = {"hidden_size": "n_embd", "num_hidden_layers": "n_layer",
                     "num_attention_heads": "n_head", "max_position_embeddings": "block_size"}

    tie_word_embeddings: bool = True
    use_cache: bool = True
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        self.to_model_config().validate_for(self.ft_model_type)  # a ConfigError names the field and the fix

    def to_model_config(self) -> ModelConfig:
        return ModelConfig(**{k: getattr(self, k) for k in _FIELDS})


class _CacheLayer:
    """One encoder layer of a transformers Cache, seen through the members futuretoken's encoder uses."""

    ends = None  # every row has the same length

    def __init__(self, cache: Cache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    @property
    def length(self) -> int:
        return self.cache.get_seq_length(self.layer)

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self.cache.update(k, v, self.layer)


class _FTPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["Block"]
    _supports_sdpa = True  # scaled_dot_product_attention is what runs; "eager" computes attention explicitly

    def __init__(self, config: _FTConfig) -> None:
        super().__init__(config)
        self.model: LanguageModel = MODELS[config.ft_model_type](config.to_model_config())
        self.post_init()

    @classmethod
    def from_module(cls, module: LanguageModel) -> "_FTPreTrainedModel":
        """Wrap a futuretoken module: the wrapper's `.model` is `module` itself (same tensors)."""
        config = cls.config_class(**module.config.to_dict())
        if config.ft_model_type != module.model_type:
            raise ValueError(f"{cls.__name__} wraps '{config.ft_model_type}' models, got a '{module.model_type}' model")
        with torch.device("meta"):  # post_init (re)initialises weights: do it on a throwaway meta module
            wrapper = cls(config)
        wrapper.model = module
        return wrapper.train(module.training)

    def save_pretrained(self, save_directory, *args: Any, **kwargs: Any) -> None:
        """transformers' save, with the self-contained modeling file and `auto_map` that trust_remote_code needs."""
        self.config.auto_map = auto_map(self.config.ft_model_type)
        super().save_pretrained(save_directory, *args, **kwargs)
        write_modeling_file(Path(save_directory))

    def _init_weights(self, module: nn.Module) -> None:
        init_module(module, self.model.n_residual_layers)  # futuretoken's GPT-2 init

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.encoder.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.encoder.wte = value

    def _run(self, input_ids: Tensor | None, attention_mask: Tensor | None, position_ids: Tensor | None,
             past_key_values: Cache | None, inputs_embeds: Tensor | None, use_cache: bool | None,
             output_attentions: bool | None, output_hidden_states: bool | None, keep: int | None = None,
             cache: Cache | None = None):
        """Run the wrapped model (keep=None: the encoder only) -> (its output, the cache or None, and the
        recorded hidden_states (embeddings, every block's output, the last after the final norm) and attentions).
        `cache` and `past_key_values` are one argument under transformers' new and old names."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids and inputs_embeds")
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("give the KV cache once: cache= (transformers >= 5.24) or past_key_values=, not both")
        past_key_values = cache if cache is not None else past_key_values
        B, t = (input_ids if input_ids is not None else inputs_embeds).shape[:2]
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        if past + t > self.config.block_size:
            raise ValueError(f"sequence of {past + t} tokens exceeds block_size={self.config.block_size} "
                             "(no sliding window); crop the input")
        if attention_mask is not None:
            if attention_mask.dim() != 2 or attention_mask.shape != (B, past + t):
                raise ValueError(f"attention_mask must be 2D (batch, cached + new tokens) = ({B}, {past + t}), "
                                 f"got {tuple(attention_mask.shape)}")
            attention_mask = attention_mask.bool()
            if position_ids is None:  # positions count real tokens: a left-padded row starts at 0
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
        attentions = self.config.output_attentions if output_attentions is None else output_attentions
        hidden = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        explicit = attentions or self.config._attn_implementation == "eager"
        trace = Trace(attentions=[] if explicit else None)
        layers = None
        if past_key_values is not None:
            layers = [_CacheLayer(past_key_values, i) for i in range(self.config.n_layer)]
        args = dict(positions=position_ids, key_padding_mask=attention_mask, embeds=inputs_embeds, trace=trace)
        out = self.model.encoder(input_ids, layers, **args) if keep is None else self.model(input_ids, layers, keep, **args)
        last = out if keep is None else out.hidden  # (B, t, d)
        recorded = {"hidden_states": (*trace.hidden, last) if hidden else None,
                    "attentions": tuple(trace.attentions) if attentions else None}
        return out, (past_key_values if use_cache else None), recorded


class _FTModel(_FTPreTrainedModel):
    """Encoder states h_t (after the final LayerNorm) as last_hidden_state."""

    @can_return_tuple
    @_old_cache_name
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                cache: Cache | None = None, **kwargs: Any) -> BaseModelOutputWithPast:
        h, cache, recorded = self._run(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                       use_cache, output_attentions, output_hidden_states, cache=cache)  # (B, T, d)
        return BaseModelOutputWithPast(last_hidden_state=h, **{CACHE_FIELD: cache}, **recorded)


class _FTForCausalLM(_FTPreTrainedModel, GenerationMixin):
    """Next-token logits (B, T, V); `labels` give transformers' causal-LM loss."""

    @can_return_tuple
    @_old_cache_name
    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None, past_key_values: Cache | None = None,
                inputs_embeds: Tensor | None = None, labels: Tensor | None = None, use_cache: bool | None = None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                logits_to_keep: int = 0, cache: Cache | None = None, **kwargs: Any) -> CausalLMOutputWithPast:
        """kwargs: loss options of transformers' ForCausalLMLoss (num_items_in_batch, shift_labels, ignore_index)."""
        out, cache, recorded = self._run(input_ids, attention_mask, position_ids, past_key_values, inputs_embeds,
                                         use_cache, output_attentions, output_hidden_states, keep=logits_to_keep,
                                         cache=cache)
        loss = None
        if labels is not None or kwargs.get("shift_labels") is not None:
            options = {k: kwargs[k] for k in LOSS_OPTIONS if k in kwargs}
            loss = self.loss_function(out.logits, labels, vocab_size=self.config.vocab_size, **options)
        return CausalLMOutputWithPast(loss=loss, logits=out.logits, **{CACHE_FIELD: cache}, **recorded)


def auto_map(model_type: str) -> dict[str, str]:
    """config.json's auto_map: the Auto classes -> this model type's classes in MODELING_FILE."""
    name = MODELS[model_type].__name__
    return {"AutoConfig": f"{MODELING_FILE[:-3]}.{name}Config", "AutoModel": f"{MODELING_FILE[:-3]}.{name}Model",
            "AutoModelForCausalLM": f"{MODELING_FILE[:-3]}.{name}ForCausalLM"}


def write_modeling_file(folder: Path) -> None:
    """FOLDER/modeling_futuretoken.py: this module, self-contained (generated from futuretoken's sources, or
    copied when this already is the generated file, e.g. a model loaded with trust_remote_code)."""
    if SELF_CONTAINED:
        shutil.copyfile(__file__, folder / MODELING_FILE)
        return
    # Not an import statement: transformers scans remote code for those and would require futuretoken.
    standalone = importlib.import_module("futuretoken.hf.standalone")
    (folder / MODELING_FILE).write_text(standalone.standalone_source())


def _hf_classes(model_type: str, module: type[LanguageModel]) -> tuple[type, type, type]:
    """The config, base-model and causal-LM classes of one futuretoken model type: for `MTPSeq`
    (model_type "mtp_seq") MTPSeqConfig ("futuretoken-mtp-seq"), MTPSeqModel and MTPSeqForCausalLM."""
    name, here = module.__name__, {"__module__": __name__}
    config = type(f"{name}Config", (_FTConfig,), {**here, "model_type": f"futuretoken-{model_type.replace('_', '-')}",
                                                 "ft_model_type": model_type})
    base = type(f"{name}Model", (_FTModel,), {**here, "config_class": config})
    causal_lm = type(f"{name}ForCausalLM", (_FTForCausalLM,), {**here, "config_class": config})
    return config, base, causal_lm


# One set of classes per model type (model.MODELS), under module-level names: `auto_map` names them.
CONFIGS: dict[str, type[_FTConfig]] = {}
BASE_MODELS: dict[str, type[_FTModel]] = {}
CAUSAL_LM: dict[str, type[_FTForCausalLM]] = {}
for _type, _module in MODELS.items():
    CONFIGS[_type], BASE_MODELS[_type], CAUSAL_LM[_type] = _hf_classes(_type, _module)
    globals().update({cls.__name__: cls for cls in (CONFIGS[_type], BASE_MODELS[_type], CAUSAL_LM[_type])})
GPTConfig, GPTModel, GPTForCausalLM = CONFIGS["gpt"], BASE_MODELS["gpt"], CAUSAL_LM["gpt"]
FTPConfig, FTPModel, FTPForCausalLM = CONFIGS["ftp"], BASE_MODELS["ftp"], CAUSAL_LM["ftp"]
MTPConfig, MTPModel, MTPForCausalLM = CONFIGS["mtp"], BASE_MODELS["mtp"], CAUSAL_LM["mtp"]
MTPSeqConfig, MTPSeqModel, MTPSeqForCausalLM = CONFIGS["mtp_seq"], BASE_MODELS["mtp_seq"], CAUSAL_LM["mtp_seq"]

__all__ = ["BASE_MODELS", "CAUSAL_LM", "CONFIGS", "FTPConfig", "FTPForCausalLM", "FTPModel", "GPTConfig",
           "GPTForCausalLM", "GPTModel", "MTPConfig", "MTPForCausalLM", "MTPModel", "MTPSeqConfig",
           "MTPSeqForCausalLM", "MTPSeqModel"]
