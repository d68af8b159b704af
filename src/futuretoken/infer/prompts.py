"""Prompts into a batch: left padding and its mask, checks, and groups of prompts by length."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts grouped by equal length (shortest first), at most batch_size per group:
    batches that need no padding."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    return [group[b : b + batch_size] for _, group in sorted(by_length.items())
            for b in range(0, len(group), batch_size)]


def batches_by_similar_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of prompts sorted by length, batch_size per group: little left padding per batch."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[b : b + batch_size] for b in range(0, len(order), batch_size)]


def as_prompt(prompt_ids, vocab_size: int, attention_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Tensor or (nested) list -> (B, t) long tensor and its (B, t) left-padding mask (None: no padding),
    with clear errors for what cannot work."""
    if not isinstance(prompt_ids, Tensor):
        rows = list(prompt_ids)
        if rows and not isinstance(rows[0], (int,)) and hasattr(rows[0], "__len__"):
            if attention_mask is not None:
                raise ValueError("attention_mask goes with a (B, t) tensor; a list of prompts is left-padded here")
            lengths = [len(r) for r in rows]
            t = max(lengths, default=0)
            if len(set(lengths)) > 1:
                if min(lengths) == 0:
                    raise ValueError(f"prompt {lengths.index(0)} is empty; give at least one token per row")
                attention_mask = torch.tensor([[0] * (t - n) + [1] * n for n in lengths])
                rows = [[0] * (t - len(r)) + list(r) for r in rows]  # pad id 0: any valid id works, it is masked
        prompt_ids = torch.tensor(rows, dtype=torch.long)
    prompt = prompt_ids.long()
    if prompt.dim() == 1:
        prompt = prompt[None]  # one prompt -> a batch of one
    if prompt.dim() != 2:
        raise ValueError(f"prompt_ids must be (B, t) token ids, got shape {tuple(prompt.shape)}")
    if prompt.shape[0] == 0 or prompt.shape[1] == 0:
        raise ValueError(
            f"the prompt is empty (shape {tuple(prompt.shape)}); give at least one token per row, "
            "e.g. the end-of-text token to start a new document"
        )
    mask = None
    if attention_mask is not None:
        mask = attention_mask.to(prompt.device).bool()
        if mask.shape != prompt.shape:
            raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, the prompts {tuple(prompt.shape)}")
        if bool((mask[:, 1:] < mask[:, :-1]).any()) or not bool(mask[:, -1].all()):
            raise ValueError("attention_mask must mark left padding: zeros then ones in every row, at least one "
                             "one (set tokenizer.padding_side='left')")
        mask = None if bool(mask.all()) else mask
    real = prompt if mask is None else prompt[mask]
    lo, hi = int(real.min()), int(real.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"prompt token ids must lie in [0, {vocab_size}), got values in [{lo}, {hi}]")
    if mask is not None:
        prompt = prompt.masked_fill(~mask, 0)  # any valid id: pad slots are never attended to
    return prompt, mask
