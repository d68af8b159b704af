"""The causal transformer encoder every model type shares: tokens -> per-token state vectors h_t."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import Block, KVCache


@dataclass
class Trace:
    """What an encoder pass records when asked (for transformers' output_hidden_states / output_attentions)."""

    hidden: list[Tensor] = field(default_factory=list)  # (B, t, d): every block's input (embeddings first)
    attentions: list[Tensor] | None = None  # (B, H, t, S) per layer; a list turns on explicit attention


class Encoder(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            Block(config.n_embd, config.n_head, config.bias, config.dropout) for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)

    def new_cache(self, batch: int, max_len: int | None = None, *, layers: int | None = None, device=None,
                  dtype=None) -> list[KVCache]:
        """One preallocated KV cache per layer, for incremental encoding (`layers`: that many caches of
        the same shape instead, for blocks that run beside the encoder)."""
        c = self.config
        device = device or self.wte.weight.device
        dtype = dtype or self.wte.weight.dtype
        length = max_len or c.block_size
        n = len(self.blocks) if layers is None else layers
        return [KVCache(batch, c.n_head, length, c.head_dim, device=device, dtype=dtype) for _ in range(n)]

    def forward(
        self,
        idx: Tensor | None,  # (B, t) token ids, or None with `embeds`
        cache: list[KVCache] | None = None,
        *,
        positions: Tensor | None = None,  # (B, t) or (t,) position ids, each < block_size
        key_padding_mask: Tensor | None = None,  # (B, S) True for real tokens, over cached + new slots
        embeds: Tensor | None = None,  # (B, t, d) token embeddings instead of idx
        trace: Trace | None = None,  # records every block's input (transformers' output_hidden_states)
    ) -> Tensor:
        """-> h: (B, t, d) after the final LayerNorm.

        With `cache`, the tokens continue the cached ones: they take the next slots (per row
        when the cache rows have different lengths) and, by default, the positions that follow.
        Left-padded rows pass `positions` (a row's first real token at 0) and `key_padding_mask`,
        which has one column per key slot, S = cached slots + t; queries never attend to keys
        it marks False (nor to later slots).
        """
        x, mask = self._inputs(idx, cache, positions, key_padding_mask, embeds)
        return self.ln_f(self._blocks(x, cache, mask, len(self.blocks), trace))

    def trunk_and_last(self, idx: Tensor | None, cache: list[KVCache] | None = None, **inputs) -> tuple[Tensor, Tensor]:
        """(z, h): the residual stream before the last block (B, t, d), no final norm (MTP's trunk), and
        the encoder's output h after the last block and the final norm (B, t, d). `inputs` as in forward."""
        z, mask = self.trunk(idx, cache, return_mask=True, **inputs)
        last = self.blocks[-1](z, cache=cache[-1] if cache else None, mask=mask)
        return z, self.ln_f(last)

    def trunk(self, idx: Tensor | None, cache: list[KVCache] | None = None, *, return_mask: bool = False,
              positions: Tensor | None = None, key_padding_mask: Tensor | None = None, embeds: Tensor | None = None):
        """The residual stream after every block but the last (B, t, d), before any norm (MTP's trunk)."""
        x, mask = self._inputs(idx, cache, positions, key_padding_mask, embeds)
        z = self._blocks(x, cache, mask, len(self.blocks) - 1)
        return (z, mask) if return_mask else z

    def _inputs(self, idx: Tensor | None, cache: list[KVCache] | None, positions: Tensor | None,
                key_padding_mask: Tensor | None, embeds: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Token + position embeddings (B, t, d) of a pass continuing `cache`, and its attention mask."""
        x = self.wte(idx) if embeds is None else embeds  # (B, t, d)
        B, t, _ = x.shape
        past = cache[0].length if cache else 0
        ends = cache[0].ends if cache else None  # (B,) when cache rows differ in length
        if positions is None:
            if past + t > self.config.block_size:
                raise ValueError(
                    f"sequence of {past + t} tokens exceeds block_size={self.config.block_size}; "
                    "crop the input or use a model with a longer context"
                )
            positions = torch.arange(past, past + t, device=x.device)
            if ends is not None:
                positions = ends[:, None] + torch.arange(t, device=x.device)  # (B, t)
        mask = self.attention_mask(B, t, cache, key_padding_mask, x.device)
        return self.drop(x + self.wpe(positions)), mask  # (B, t, d)

    def _blocks(self, x: Tensor, cache: list[KVCache] | None, mask: Tensor | None, n: int,
                trace: Trace | None = None) -> Tensor:
        """The first n blocks on x (B, t, d), layer i using cache[i]."""
        for i, block in enumerate(self.blocks[:n]):
            if trace is not None:
                trace.hidden.append(x)
            x = block(x, cache=cache[i] if cache else None, mask=mask,
                      weights=trace.attentions if trace is not None else None)
        return x

    def attention_mask(self, B: int, t: int, cache: list[KVCache] | None, key_padding_mask: Tensor | None,
                       device) -> Tensor | None:
        """The self-attention mask of a pass of t tokens continuing `cache` (see forward), or None for
        plain causal attention. Blocks that run beside the encoder on caches of the same slots (MTP's
        heads, MTP-seq's modules) use it too."""
        past = cache[0].length if cache else 0
        ends = cache[0].ends if cache else None
        if key_padding_mask is None and ends is None:
            return None
        return self._mask(B, t, past, ends, key_padding_mask, device)

    @staticmethod
    def _mask(B: int, t: int, past: int, ends: Tensor | None, key_padding_mask: Tensor | None, device) -> Tensor:
        """(B, 1, t, S) bool: query i of row b sits in slot q = (ends[b] or past) + i and may attend
        to the real slots up to q. It always sees itself, so a pad query never has every key
        masked (which would make NaNs that then reach real tokens through zero attention weights)."""
        S = past + t
        q_slot = (past if ends is None else ends[:, None]) + torch.arange(t, device=device)  # (B or 1, t)
        q_slot = q_slot.expand(B, t)[:, :, None]  # (B, t, 1)
        slots = torch.arange(S, device=device)  # (S,)
        allowed = slots <= q_slot  # (B, t, S)
        if key_padding_mask is not None:
            if key_padding_mask.shape != (B, S):
                raise ValueError(f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; it needs one column "
                                 f"per cached and new slot: ({B}, {S})")
            allowed = allowed & key_padding_mask.bool()[:, None, :]
        return (allowed | (slots == q_slot))[:, None]  # (B, 1, t, S)
