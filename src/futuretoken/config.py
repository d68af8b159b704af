"""Typed configuration: dataclasses, presets, TOML loading and validation.

Every error names the offending field and how to fix it, because configs are
written by hand and a bare traceback from deep inside the model helps no one.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar


def _tomllib():
    """The TOML parser, imported where it is used: the model's config (in an export's self-contained modeling
    file too, hf/standalone.py) needs no TOML package."""
    try:  # a try block: transformers' scan of remote code does not require what it imports
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib


class ConfigError(ValueError):
    """A configuration value is wrong; the message says which one and how to fix it."""


T = TypeVar("T")


EXPECTED = {"bool": "true or false", "int": "a whole number", "float": "a finite number", "str": "a string"}


def _coerce(name: str, value: Any, annotation: str) -> Any:
    """Convert a TOML/CLI value to the field's declared type, or explain why not.

    Strict where Python is lenient: a bool is not a number (n_layer=true), a number is not a
    bool, and a float must be finite (lr=inf, grad_clip=nan).
    """
    optional = "None" in annotation
    if value is None or (isinstance(value, str) and value.lower() == "none" and optional):
        if optional:
            return None
        raise ConfigError(f"{name}: None is not allowed; give a value of type {annotation}")
    base = annotation.replace("| None", "").replace("None |", "").strip()
    try:
        if base == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                return value.lower() in ("true", "1", "yes")
            raise ValueError(value)
        if base in ("int", "float") and isinstance(value, bool):
            raise ValueError(value)
        if base == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if base == "float":
            if not math.isfinite(value := float(value)):
                raise ValueError(value)
            return value
        if base == "str":
            return str(value)
        if base.startswith("tuple") and isinstance(value, list):  # a TOML array
            return tuple(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{name}={value!r} is not a valid {base}; give {EXPECTED[base]}") from None
    return value


def check_types(config: Any, section: str) -> None:
    """Coerce every field of a config dataclass in place (see _coerce): configs built in Python,
    not read from TOML, get the same checks."""
    for f in fields(config):
        setattr(config, f.name, _coerce(f"{section}.{f.name}", getattr(config, f.name), str(f.type)))


def build(cls: type[T], values: dict[str, Any], section: str) -> T:
    """Make dataclass `cls` from a mapping, rejecting unknown keys with a suggestion."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else "."
            raise ConfigError(
                f"unknown key '{key}' in [{section}]{hint} Valid keys: {', '.join(sorted(known))}"
            )
        kwargs[key] = _coerce(f"{section}.{key}", value, str(known[key].type))
    return cls(**kwargs)


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
        raise ConfigError(f"config file {path} {problem}; give the path of a TOML file")
    tomllib = _tomllib()
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); TOML files are UTF-8") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path} is not valid TOML: {err}") from None


# The choices of the string-valued settings: their one home (validation and the modules that use them).
DECODER_STARTS = ("current", "learned")  # model.decoder_start
MTP_BACKWARDS = ("sequential", "joint")  # model.mtp_backward
LOSS_IMPLEMENTATIONS = ("auto", "torch", "chunked")  # model.loss_impl (model/loss.py)
DTYPES = ("auto", "float32", "bfloat16", "float64")  # train.dtype
PARALLEL = ("ddp", "fsdp")  # train.parallel


@dataclass
class ModelConfig:
    """Shape of the encoder (shared by every model type) and of each objective's extra parts."""

    vocab_size: int = 50257  # the tokenizer's; the embedding is padded to a multiple of vocab_multiple
    vocab_multiple: int = 64  # padded rows keep matmul shapes aligned; they are never predicted
    block_size: int = 1024  # T: encoder context length
    n_layer: int = 12  # encoder layers
    n_head: int = 12  # encoder attention heads (n_embd divisible by it)
    n_embd: int = 768  # d: the width of h_t and of every block
    dropout: float = 0.0  # in [0, 1): on attention, residual and embedding outputs
    bias: bool = True  # biases in linear layers and LayerNorms (GPT-2 has them)
    # Tokens predicted from every position (ignored by GPT)
    horizon: int = 8  # N: FTP's decoder outputs; MTP's heads; MTP-seq's next-token head + N-1 modules
    # FTP only
    gamma: float = 0.8  # weight of distance k is gamma**(k-1)
    pseudo_len: int = 12  # P: length of the pseudo-sequence h_t is expanded into
    dec_layer: int = 3  # FTP decoder layers (0: h_t goes straight to the head)
    dec_head: int = 12  # FTP decoder attention heads (n_embd divisible by it)
    decoder_fraction: float = 1.0  # share of positions whose decoder runs in training
    decoder_start: str = "current"  # first decoder input: "current" token x_t, or a "learned" vector (h_t must carry x_t)
    # MTP (parallel heads, Gloeckle et al. 2024) and MTP-seq (sequential modules, DeepSeek-V3)
    mtp_backward: str = "sequential"  # MTP: "sequential" runs each extra head's backward at once (less memory) | "joint"
    mtp_lambda: float = 0.3  # MTP-seq: weight of the modules' mean cross-entropy (DeepSeek-V3: 0.3, later 0.1)
    # Loss
    eot_token: int | None = None  # document separator: FTP targets past it are masked
    loss_chunk: int = 4096  # rows of logits computed at once in the cross-entropy
    loss_impl: str = "auto"  # auto (torch's linear_cross_entropy when available) | torch | chunked

    def __post_init__(self) -> None:
        self.validate()

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token embedding / tied head: vocab_size rounded up to vocab_multiple."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        check_types(self, "model")
        for name, limit in MODEL_LIMITS.items():
            need(getattr(self, name) <= limit, f"{name}={getattr(self, name)} is above {limit}, the largest "
                 "this version accepts; use a smaller value")
        for name in ("vocab_size", "vocab_multiple", "block_size", "n_layer", "n_head", "n_embd", "loss_chunk"):
            need(getattr(self, name) >= 1, f"{name}={getattr(self, name)} must be >= 1")
        need(
            self.n_embd % self.n_head == 0,
            f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; choose n_head among {_divisors(self.n_embd)}",
        )
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1)")
        need(self.loss_impl in LOSS_IMPLEMENTATIONS,
             f"loss_impl={self.loss_impl!r} is unknown; choose auto, torch or chunked")
        if self.eot_token is not None:
            need(
                0 <= self.eot_token < self.vocab_size,
                f"eot_token={self.eot_token} is outside the vocabulary [0, {self.vocab_size})",
            )

    def validate_for(self, model_type: str) -> None:
        """The checks of the fields `model_type` uses (TYPE_FIELDS): a GPT's config is not refused for a
        decoder setting it never reads. Run by RunConfig, the model classes and the transformers configs."""
        for name in TYPE_FIELDS.get(model_type, ()):
            problem = FIELD_CHECKS[name](self)
            if problem:
                raise ConfigError(f"{problem} (model type {model_type})")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "ModelConfig":
        if name not in PRESETS:
            raise ConfigError(f"unknown preset '{name}'; choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        """`preset = "tiny"` (optional) gives the base; other keys override it."""
        values = dict(values)
        base = PRESETS.get(values.get("preset", ""), {}) if "preset" in values else {}
        if "preset" in values and values["preset"] not in PRESETS:
            raise ConfigError(f"unknown preset '{values['preset']}'; choose one of {', '.join(PRESETS)}")
        values.pop("preset", None)
        return build(cls, {**base, **values}, "model")

    @classmethod
    def from_toml(cls, path: str | Path) -> "ModelConfig":
        data = read_toml(path)
        return cls.from_dict(data.get("model", data))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Far above any model this library trains, and low enough that a config read from a file cannot
# make a constructor loop or allocate without end before the weights are checked.
MODEL_LIMITS = {"vocab_size": 1 << 22, "vocab_multiple": 1 << 12, "block_size": 1 << 20, "n_layer": 1024,
                "n_head": 1024, "n_embd": 1 << 16, "horizon": 1024, "pseudo_len": 1024, "dec_layer": 1024,
                "dec_head": 1024, "loss_chunk": 1 << 24}

PRESETS: dict[str, dict[str, Any]] = {
    # CPU seconds per step; CI and the demo.
    "tiny": dict(block_size=128, n_layer=2, n_head=4, n_embd=128, horizon=4, pseudo_len=4,
                 dec_layer=1, dec_head=4, vocab_size=4096),
    # One GPU, minutes.
    "small": dict(block_size=512, n_layer=6, n_head=6, n_embd=384, horizon=8, pseudo_len=12,
                  dec_layer=2, dec_head=6, vocab_size=16384),
    # Paper scale: GPT-2 small encoder, 3-layer decoder.
    "gpt2-124m": dict(block_size=1024, n_layer=12, n_head=12, n_embd=768, horizon=8, pseudo_len=12,
                      dec_layer=3, dec_head=12, vocab_size=50257),
}


@dataclass
class DataConfig:
    """Where training tokens come from: the prepared folder `dir`.

    `corpus`, `tokenizer` and `val_fraction` say what `dir` holds. Left unset (None), the folder is
    used as it was prepared (and, when it has no manifest yet, prepared from the defaults below).
    Set, they are a promise the folder's manifest must keep: a folder prepared from another corpus,
    tokenizer or split is refused, never trained on silently.
    """

    DEFAULTS = {"corpus": "builtin:prose", "tokenizer": "bpe:4096", "val_fraction": 0.05}

    dir: str = "runs/data/prose-bpe4096"  # the prepared data folder (`futuretoken data prepare --out`)
    corpus: str | None = None  # None: whatever `dir` holds (builtin:prose when it must be prepared)
    tokenizer: str | None = None  # None: whatever `dir` holds (bpe:4096 when it must be prepared)
    val_fraction: float | None = None  # None: whatever `dir` holds (0.05 when it must be prepared)
    verify: bool = True  # re-hash every shard against the manifest when training starts

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_types(self, "data")
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction={self.val_fraction} must be in (0, 1)")

    def preparation(self) -> dict[str, Any]:
        """The corpus, tokenizer and val_fraction to prepare `dir` from: the set ones, else the defaults."""
        return {key: default if getattr(self, key) is None else getattr(self, key)
                for key, default in self.DEFAULTS.items()}


# What train.model may name (futuretoken.model.MODELS maps each to its class; config sits below model).
MODEL_TYPES = ("gpt", "ftp", "mtp", "mtp_seq")

# The ModelConfig fields each model type reads beyond the encoder's, checked only for that type.
TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "gpt": (),
    "ftp": ("horizon", "gamma", "pseudo_len", "dec_layer", "dec_head", "decoder_fraction", "decoder_start"),
    "mtp": ("horizon", "mtp_backward"),
    "mtp_seq": ("horizon", "mtp_lambda"),
}


def _divisors(n: int) -> list[int]:
    return [h for h in range(1, 33) if n % h == 0]


# field -> its check: None when the value is fine, else what is wrong and the fix.
FIELD_CHECKS: dict[str, Callable[[ModelConfig], str | None]] = {
    "horizon": lambda c: None if c.horizon >= 1 else
    f"horizon (N)={c.horizon} must be >= 1; N=1 predicts the next token only",
    "gamma": lambda c: None if 0.0 < c.gamma <= 1.0 else f"gamma={c.gamma} must be in (0, 1]; 1 weights all distances equally",
    "pseudo_len": lambda c: None if c.pseudo_len >= 1 else f"pseudo_len (P)={c.pseudo_len} must be >= 1",
    "dec_layer": lambda c: None if c.dec_layer >= 0 else f"dec_layer={c.dec_layer} must be >= 0",
    "dec_head": lambda c: None if c.dec_head >= 1 and c.n_embd % c.dec_head == 0 else
    f"n_embd={c.n_embd} is not divisible by dec_head={c.dec_head}; choose dec_head among {_divisors(c.n_embd)}",
    "decoder_fraction": lambda c: None if 0.0 < c.decoder_fraction <= 1.0 else
    f"decoder_fraction={c.decoder_fraction} must be in (0, 1]; 1 trains the decoder on every position",
    "decoder_start": lambda c: None if c.decoder_start in DECODER_STARTS else
    f"decoder_start={c.decoder_start!r} is unknown; choose current (x_t) or learned (a start vector)",
    "mtp_backward": lambda c: None if c.mtp_backward in MTP_BACKWARDS else
    f"mtp_backward={c.mtp_backward!r} is unknown; choose sequential (less memory, same gradients) or joint",
    "mtp_lambda": lambda c: None if c.mtp_lambda >= 0.0 else
    f"mtp_lambda={c.mtp_lambda} must be >= 0; 0 trains the next-token head alone",
}
# What train.activation_checkpointing may name (training/parallelize.py).
ACTIVATION_CHECKPOINTING = ("none", "decoder", "all")
# What train.schedule may name (training/optim.py learning_rate).
SCHEDULES = ("cosine", "wsd")
TRACKERS = ("none", "tensorboard", "wandb")  # train.tracker (training/tracking.py)
# str fields with a closed set of values, for describe().
ALLOWED = {"decoder_start": DECODER_STARTS, "mtp_backward": MTP_BACKWARDS, "loss_impl": LOSS_IMPLEMENTATIONS,
           "model": MODEL_TYPES, "dtype": DTYPES, "parallel": PARALLEL,
           "activation_checkpointing": ACTIVATION_CHECKPOINTING, "schedule": SCHEDULES,
           "tracker": TRACKERS}

# The seeds every consumer accepts: torch.manual_seed takes [-2**63, 2**64), numpy's SeedSequence
# (training/trainer.py process_seed, the window sampler) only integers >= 0, and TOML integers are
# signed 64-bit: [0, 2**63 - 1] is what all of them take.
SEED_MAX = 2**63 - 1


@dataclass
class TrainConfig:
    model: str = "ftp"  # the objective: gpt | ftp | mtp | mtp_seq (MODEL_TYPES)
    out_dir: str = "runs/train"  # the run folder: checkpoints, metrics.jsonl, run.json, tokenizer
    batch_size: int = 16  # sequences per micro-batch per process
    grad_accum: int = 1  # micro-batches per optimizer step (tokens per step = batch_size * grad_accum * block_size)
    max_steps: int = 1000  # optimizer steps
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr: float = 1e-4  # learning rate at the end of the schedule
    warmup_steps: int = 100  # linear warm-up from 0 to lr
    schedule: str = "cosine"  # cosine (to min_lr at max_steps) | wsd (warmup, stable, then linear decay)
    decay_steps: int | None = None  # wsd: the decay's length (None: the last fifth of max_steps)
    weight_decay: float = 0.1  # AdamW, on matrices only (0 disables it)
    beta1: float = 0.9  # AdamW, in [0, 1)
    beta2: float = 0.95  # AdamW, in [0, 1)
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 100  # steps between validation losses
    eval_batches: int = 20  # batches per validation
    ckpt_interval: int = 100  # steps between checkpoints
    keep_last: int = 3  # newest checkpoints kept (older ones are deleted unless keep_every keeps them)
    keep_every: int = 0  # also keep every checkpoint whose step is a multiple of this (0: none); `compare` picks among them
    log_interval: int = 10  # steps between training-loss lines in metrics.jsonl
    seed: int = 0  # init, data order and dropout; 0 to 2**63 - 1
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | float32 | bfloat16 | float64 (exactness checks)
    deterministic: bool = False  # deterministic kernels: bit-exact resume on CUDA too (slower)
    compile: bool = False  # torch.compile each block (faster on GPU after a compile wait)
    activation_checkpointing: str = "none"  # none | decoder (blocks beside the encoder) | all: recompute in backward
    parallel: str = "ddp"  # ddp | fsdp (only used under torchrun with several processes)
    progress: bool = True  # a progress bar while training
    tracker: str = "none"  # live curves beside metrics.jsonl: none | tensorboard (RUN/tensorboard) | wandb

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_types(self, "train")
        if self.model not in MODEL_TYPES:
            raise ConfigError(f"train.model='{self.model}' is unknown; choose one of {', '.join(MODEL_TYPES)}")
        for name in ("batch_size", "grad_accum", "max_steps", "eval_interval", "ckpt_interval",
                     "keep_last", "log_interval", "eval_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name}={getattr(self, name)} must be >= 1")
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ConfigError(f"train.lr={self.lr}, min_lr={self.min_lr}: need 0 <= min_lr <= lr and lr > 0")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay={self.weight_decay} must be >= 0 (0 disables it)")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ConfigError(f"train.beta1={self.beta1}, beta2={self.beta2}: each must be in [0, 1)")
        if self.grad_clip < 0:
            raise ConfigError(f"train.grad_clip={self.grad_clip} must be >= 0 (0 disables clipping)")
        if self.keep_every < 0:
            raise ConfigError(f"train.keep_every={self.keep_every} must be >= 0 (0 keeps only the last keep_last)")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"train.seed={self.seed} is outside [0, {SEED_MAX}] (0 to 2**63 - 1); "
                              "give a seed in that range")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps={self.warmup_steps} must be >= 0")
        if self.dtype not in DTYPES:
            raise ConfigError(f"train.dtype='{self.dtype}' is unknown; choose auto, float32, bfloat16 or float64")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"train.schedule='{self.schedule}' is unknown; choose one of {', '.join(SCHEDULES)}")
        if self.decay_steps is not None and not 1 <= self.decay_steps <= self.max_steps - self.warmup_steps:
            raise ConfigError(f"train.decay_steps={self.decay_steps} must lie in 1..max_steps - warmup_steps "
                              f"({self.max_steps - self.warmup_steps}); or leave it unset (the last fifth)")
        if self.activation_checkpointing not in ACTIVATION_CHECKPOINTING:
            raise ConfigError(f"train.activation_checkpointing='{self.activation_checkpointing}' is unknown; "
                              "choose none, decoder or all")
        if self.tracker not in TRACKERS:
            raise ConfigError(f"train.tracker='{self.tracker}' is unknown; choose one of {', '.join(TRACKERS)}")
        if self.parallel not in PARALLEL:
            raise ConfigError(f"train.parallel='{self.parallel}' is unknown; choose ddp or fsdp")


def describe(cls: type) -> list[tuple[str, Any, str]]:
    """(key, default, meaning) of every field of a config dataclass; the meaning is the comment beside the
    field in this file (one place for both), with a str field's allowed values where a constant lists them."""
    import inspect
    import re

    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):  # installed without sources
        source = ""
    out = []
    for f in fields(cls):
        found = re.search(rf"^\s+{f.name}: [^\n]*?#\s*(.*)$", source, re.M)
        meaning = found.group(1) if found else ""
        choices = ALLOWED.get(f.name)
        if choices and not all(c in meaning for c in choices):
            meaning += f" (one of {', '.join(choices)})"
        out.append((f.name, f.default, meaning))
    return out


@dataclass
class RunConfig:
    """Everything a training run needs: one TOML file with [model], [data] and [train] tables."""

    model: ModelConfig
    data: DataConfig
    train: TrainConfig

    SECTIONS = ("model", "data", "train")

    def __post_init__(self) -> None:
        self.model.validate_for(self.train.model)  # the fields of the model type this run trains

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        unknown = set(values) - set(cls.SECTIONS)
        if unknown:
            raise ConfigError(
                f"unknown table(s) {sorted(unknown)} in the config; valid tables are [model], [data], [train]"
            )
        return cls(model=ModelConfig.from_dict(values.get("model", {})),
                   data=build(DataConfig, values.get("data", {}), "data"),
                   train=build(TrainConfig, values.get("train", {}), "train"))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] = ()) -> "RunConfig":
        """TOML file (optional) plus `section.key=value` (or unique `key=value`) overrides."""
        values = read_toml(path) if path else {}
        for item in overrides:
            key, sep, raw = item.partition("=")
            if not sep:
                raise ConfigError(f"override '{item}' is not key=value; write e.g. train.lr=3e-4")
            section, _, name = key.rpartition(".")
            if not section:
                owners = [s for s, c in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig))
                          if name in {f.name for f in fields(c)} | ({"preset"} if s == "model" else set())]
                if len(owners) != 1:
                    raise ConfigError(
                        f"override '{key}' is ambiguous or unknown; prefix it with its table, e.g. train.{name}"
                        if owners else f"unknown config key '{key}'; run `futuretoken train --help-config` to list keys"
                    )
                section = owners[0]
            values.setdefault(section, {})[name] = _parse_scalar(raw)
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return {s: dataclasses.asdict(getattr(self, s)) for s in self.SECTIONS}


def _parse_scalar(raw: str) -> Any:
    """CLI values: TOML scalar syntax when it parses (1e-3, true, "x"), the raw string otherwise."""
    tomllib = _tomllib()
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw
