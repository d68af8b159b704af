"""Sampling settings and the next-token distribution they define.

Every strategy (ar, rollout, speculative) turns logits into a distribution with
`probs` and draws from it with `sample`. Speculative decoding needs the filtered
*distribution* (not just a sampled token) of both the drafter and the verifier, so
greedy decoding is also expressed as a distribution: a one-hot on the argmax. With
one-hot distributions the speculative acceptance rule reduces exactly to "accept the
draft iff it equals the verifier's argmax", so one code path serves both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class SamplingConfig:
    """How a token is chosen from logits.

    temperature: 0 means greedy (argmax); otherwise logits are divided by it.
    top_k: keep only the k most likely tokens (ties with the k-th are kept too).
    top_p: nucleus sampling; keep the smallest set of most likely tokens whose mass
        reaches top_p (the most likely token is always kept).
    Filters apply in the order temperature, top-k, top-p (the Hugging Face order).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
            raise ValueError(
                f"temperature={t!r} is invalid: give a finite number >= 0 (0 = greedy, 1 = the model's distribution)"
            )
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"top_k={k!r} is invalid: give an integer >= 1, or None to disable it")
        p = self.top_p
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 < p <= 1.0):
            raise ValueError(f"top_p={p!r} is invalid: give a number in (0, 1], or None to disable it")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probs(logits: Tensor, cfg: SamplingConfig) -> Tensor:
    """logits (..., V) -> float32 probabilities (..., V) after temperature, top-k and top-p."""
    logits = logits.float()  # softmax and cumulative sums in fp32 even when the model runs in bf16
    V = logits.shape[-1]
    if cfg.greedy:
        # A one-hot distribution, so speculative acceptance needs no special case (module docstring).
        return torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)  # (..., V)
    # Shift the row's maximum to 0 before dividing: logits / a tiny temperature would overflow
    # to +inf, and inf - inf in the softmax is nan. Shifted, the rest go to -inf at worst and a
    # tiny temperature acts like greedy. The maximum is kept at exactly 0, since in float32 a
    # temperature may round to 0 and 0 / 0 is nan.
    shifted = logits - logits.max(-1, keepdim=True).values
    logits = torch.where(shifted == 0, 0.0, shifted / cfg.temperature)
    if cfg.top_k is not None and cfg.top_k < V:
        kth = torch.topk(logits, cfg.top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    p = torch.softmax(logits, dim=-1)  # (..., V)
    if cfg.top_p is not None and cfg.top_p < 1.0:
        sorted_p, order = torch.sort(p, dim=-1, descending=True)  # (..., V)
        # Drop a token when the mass strictly before it already reaches top_p; the first
        # token has zero mass before it, so it always survives.
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) >= cfg.top_p
        sorted_p = sorted_p.masked_fill(drop, 0.0)
        p = torch.zeros_like(p).scatter_(-1, order, sorted_p)
        p = p / p.sum(-1, keepdim=True)
    return p


def sample(p: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """p (..., V) probabilities -> (...,) sampled token ids (long). A one-hot p returns its hot index."""
    V = p.shape[-1]
    # multinomial never draws a zero-probability category, which makes greedy exact.
    return torch.multinomial(p.reshape(-1, V), 1, generator=generator).view(p.shape[:-1])
