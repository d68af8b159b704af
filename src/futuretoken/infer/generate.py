"""Text generation: `ar` (every model type), `rollout` and `speculative` (FTP, MTP, MTP-seq).

Conventions shared by every strategy:
- Prompts of different lengths are left-padded (a list of lists is padded here; a tensor
  comes with an `attention_mask` of zeros then ones per row). Every row gets its own
  positions (its first real token at 0) and the encoder never attends to pad slots, so a
  row is generated exactly as it would be alone (greedy: token for token; sampled: from
  the same distribution). The result is one left-padded (B, t + n) tensor.
- The whole sequence (prompt + new tokens) never exceeds `block_size`: there is no
  sliding window, so generation stops early when the context is full, and the result can
  always be re-encoded (scored, embedded) by the same model. A prompt that leaves no room
  is an error that says how to crop it.
- The encoder keeps a KV cache; a token is encoded only when a later token needs its h.
- `ModelOutput.logits` is not used: for FTP it runs decoder step 1 at *every* position,
  while generation only needs it at the last one.
- What a model type adds to its encoder (FTP's decoder, MTP's heads, MTP-seq's modules) is
  its drafter (infer/drafters.py): the `ar` distribution at a row's state, and the drafts.

This module is the API; prompts.py turns prompts into a batch, decoding.py runs the loops.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..model import MODELS
from .decoding import Decoding, StreamCallback
from .drafters import DRAFTERS, drafter_for
from .prompts import as_prompt, batches_by_length, batches_by_similar_length
from .sampling import SamplingConfig

STRATEGIES = ("ar", "rollout", "speculative")
DRAFTING = ("rollout", "speculative")  # strategies that need a drafter: the model types in DRAFTERS


@dataclass
class GenerationStats:
    new_tokens: int  # generated per row
    seconds: float  # wall time of the whole call, prompt encoding included
    tokens_per_s: float  # generated tokens of all rows / seconds
    encoder_passes: int  # encoder forward calls, the prompt's included
    tokens_per_encoder_pass: float  # new_tokens / encoder_passes: 1.0 for ar, up to ~k for speculative
    acceptance_rate: float | None = None  # speculative: accepted / verified draft tokens y_2..y_k, per row outcome


@dataclass
class GenerationResult:
    tokens: Tensor  # (B, t + n) prompt followed by the generated tokens, left-padded like the prompt
    stats: GenerationStats
    attention_mask: Tensor | None = None  # (B, t + n) zeros over left padding, ones elsewhere; None: no padding

    def rows(self) -> list[list[int]]:
        """Every row's tokens without its left padding."""
        if self.attention_mask is None:
            return self.tokens.tolist()
        return [row[mask.bool()].tolist() for row, mask in zip(self.tokens, self.attention_mask)]


def _draft_length(model, strategy: str, draft_len: int | None) -> int:
    """Tokens per draft (the model's horizon by default); ValueError when the model cannot run `strategy`."""
    model_type = getattr(model, "model_type", "")
    if model_type not in MODELS:
        raise ValueError(f"generate needs a futuretoken model ({', '.join(MODELS)}), got {type(model).__name__}")
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; choose one of {', '.join(STRATEGIES)}")
    if strategy in DRAFTING and model_type not in DRAFTERS:
        raise ValueError(
            f"strategy={strategy!r} needs a model that drafts several tokens (FTP, MTP or MTP-seq); "
            f"this is a {model_type.upper()} model: use strategy='ar'"
        )
    if draft_len is None:
        return model.horizon
    if strategy == "ar":
        raise ValueError("draft_len only applies to strategy='rollout' or 'speculative'; leave it None for 'ar'")
    if isinstance(draft_len, bool) or not isinstance(draft_len, int) or not 1 <= draft_len <= model.horizon:
        raise ValueError(
            f"draft_len={draft_len!r} is invalid: the model predicts at most horizon={model.horizon} "
            f"tokens, give an integer in 1..{model.horizon} (or None for {model.horizon})"
        )
    return draft_len


def generate(
    model,
    prompt_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    max_new_tokens: int,
    strategy: str = "ar",
    sampling: SamplingConfig | None = None,
    draft_len: int | None = None,
    generator: torch.Generator | None = None,
    stream: StreamCallback | None = None,
    attention_mask: Tensor | None = None,
) -> GenerationResult:
    """Continue `prompt_ids` (B, t) by up to `max_new_tokens` tokens.

    prompt_ids: a (B, t) tensor, one prompt, or a list of prompts of any lengths (left-padded here).
    strategy: "ar" (next token from the model at the last position; FTP: decoder step 1),
        "rollout" (the drafter writes draft_len tokens from one state, then the encoder catches
        up in one pass) or "speculative" (the drafter drafts, one encoder pass verifies; same
        output distribution as "ar", see the module docstring). Drafters: FTP's decoder, MTP's
        heads, MTP-seq's modules.
    draft_len: tokens per draft for rollout/speculative, 1..horizon (default horizon).
    generator: a torch.Generator on the model's device for reproducible sampling.
    stream: called with each chunk of newly committed tokens (B, j) as soon as it is final in every row.
    attention_mask: (B, t) for a tensor of left-padded prompts: zeros over padding, then ones.
    Stops after max_new_tokens or when the sequence reaches block_size tokens.
    """
    sampling = sampling if sampling is not None else SamplingConfig()
    k_max = _draft_length(model, strategy, draft_len)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r} is invalid: give an integer >= 0")

    device = model.head_weight.device
    prompt, mask = as_prompt(prompt_ids, model.config.vocab_size, attention_mask)
    prompt = prompt.to(device)  # (B, t)
    mask = mask.to(device) if mask is not None else None  # (B, t)
    B, t = prompt.shape
    block = model.config.block_size
    if max_new_tokens > 0 and t >= block:
        raise ValueError(
            f"the prompt has {t} tokens but block_size={block} leaves no room for new tokens "
            f"(no sliding window); crop it, e.g. prompt_ids[:, -{max(1, block - max_new_tokens)}:]"
        )
    n = min(max_new_tokens, block - t)  # the sequence never exceeds block_size

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            run = Decoding(model, prompt, mask, n, k_max if strategy != "ar" else 0, sampling, generator, stream,
                       drafter_for(model, strategy, sampling))
            if n > 0:
                if strategy == "ar":
                    run.ar()
                elif strategy == "rollout":
                    run.rollout(k_max)
                else:
                    run.speculative(k_max)
            tokens = torch.cat([prompt, run.out[:, :n]], dim=1)  # (B, t + n)
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # honest wall time
    finally:
        model.train(was_training)
    full_mask = None if mask is None else torch.cat([mask, torch.ones_like(run.out[:, :n])], 1).long()
    return GenerationResult(tokens=tokens, stats=_stats(run, B, n), attention_mask=full_mask)


def _stats(run: Decoding, batch: int, n: int) -> GenerationStats:
    seconds = time.perf_counter() - run.start
    return GenerationStats(
        new_tokens=n,
        seconds=seconds,
        tokens_per_s=batch * n / seconds if seconds > 0 else float("inf"),
        encoder_passes=run.passes,
        tokens_per_encoder_pass=n / run.passes if run.passes else 0.0,
        acceptance_rate=run.accepted / run.verified if run.verified else None,
    )


__all__ = ["GenerationResult", "GenerationStats", "STRATEGIES", "batches_by_length", "batches_by_similar_length",
           "generate"]
