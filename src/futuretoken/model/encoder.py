"""The causal transformer encoder shared by GPT and FTP: tokens -> per-token state vectors h_t."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import Block, KVCache


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

    def new_cache(self, batch: int, max_len: int | None = None, *, device=None, dtype=None) -> list[KVCache]:
        """One preallocated KV cache per layer, for incremental encoding."""
        c = self.config
        device = device or self.wte.weight.device
        dtype = dtype or self.wte.weight.dtype
        length = min(max_len or c.block_size, c.block_size)
        return [KVCache(batch, c.n_head, length, c.head_dim, device=device, dtype=dtype) for _ in self.blocks]

    def forward(self, idx: Tensor, cache: list[KVCache] | None = None) -> Tensor:
        """idx: (B, t) -> h: (B, t, d) after the final LayerNorm.

        With `cache`, idx continues the cached prefix (positions offset by its length).
        """
        B, t = idx.shape
        start = cache[0].length if cache else 0
        if start + t > self.config.block_size:
            raise ValueError(
                f"sequence of {start + t} tokens exceeds block_size={self.config.block_size}; "
                "crop the input or use a model with a longer context"
            )
        pos = torch.arange(start, start + t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, t, d)
        for i, block in enumerate(self.blocks):
            x = block(x, cache=cache[i] if cache else None)
        return self.ln_f(x)
