"""Transformer building blocks: attention (self/cross, SDPA, KV cache), MLP, pre-norm blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """Preallocated keys/values of one attention layer; `length` marks how much is valid.

    Preallocation keeps generation free of `torch.cat` copies, and rolling back a
    rejected speculative draft is just `truncate`.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, *, device, dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v: (B, H, t, hd) -> all cached keys/values (B, H, length + t, hd)."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_len}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def truncate(self, length: int) -> None:
        self.length = min(self.length, length)


class Attention(nn.Module):
    """Multi-head attention. Causal self-attention, or cross-attention to a memory."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float, *, causal: bool) -> None:
        super().__init__()
        self.n_head, self.causal, self.dropout = n_head, causal, dropout
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.kv = nn.Linear(n_embd, 2 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.proj.residual_out = True  # scaled init, GPT-2 style
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, x: Tensor) -> Tensor:  # (B, t, d) -> (B, H, t, hd)
        B, t, d = x.shape
        return x.view(B, t, self.n_head, d // self.n_head).transpose(1, 2)

    def memory_kv(self, memory: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values of a cross-attention memory, computable once per memory. (B, S, d) -> 2x (B, H, S, hd)."""
        k, v = self.kv(memory).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: Tensor,  # (B, t, d)
        memory_kv: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        B, t, d = x.shape
        q = self._heads(self.q(x))  # (B, H, t, hd)
        mask, is_causal = None, False
        if memory_kv is not None:  # cross-attention: every query sees the whole memory
            k, v = memory_kv
        else:
            k, v = self.memory_kv(x)
            past = 0
            if cache is not None:
                past = cache.length
                k, v = cache.append(k, v)  # (B, H, past + t, hd)
            if self.causal and t > 1:
                if past == 0:
                    is_causal = True
                else:  # query i sits at absolute position past + i
                    mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, H, t, hd)
        y = y.transpose(1, 2).reshape(B, t, d)
        return self.resid_drop(self.proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, bias: bool, dropout: float) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.proj.residual_out = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, optional cross-attention, MLP."""

    def __init__(self, n_embd: int, n_head: int, bias: bool, dropout: float, *, cross: bool = False) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = Attention(n_embd, n_head, bias, dropout, causal=True)
        self.ln_x = nn.LayerNorm(n_embd, bias=bias) if cross else None
        self.cross = Attention(n_embd, n_head, bias, dropout, causal=False) if cross else None
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, bias, dropout)

    def forward(
        self,
        x: Tensor,  # (B, t, d)
        cache: KVCache | None = None,
        memory_kv: tuple[Tensor, Tensor] | None = None,
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache)
        if self.cross is not None:
            x = x + self.cross(self.ln_x(x), memory_kv=memory_kv)
        return x + self.mlp(self.ln_2(x))


def init_weights(module: nn.Module, n_residual_layers: int) -> None:
    """GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * layers)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            std = 0.02 / (2 * n_residual_layers) ** 0.5 if getattr(sub, "residual_out", False) else 0.02
            nn.init.normal_(sub.weight, mean=0.0, std=std)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.Embedding):
            nn.init.normal_(sub.weight, mean=0.0, std=0.02)
