"""Transformer building blocks: attention (self/cross, SDPA, KV cache), MLP, pre-norm blocks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class KVCache:
    """Preallocated keys/values of one attention layer; `length` marks how much is valid.

    Preallocation keeps generation free of `torch.cat` copies, and rolling back a
    rejected speculative draft is just `truncate`. Rows may hold different lengths
    (`ends`, after a per-row `truncate`): each row then appends at its own end, and
    `length` is the longest row, so keys are read up to there. A row's slots past its
    own end are stale; the encoder's causal-by-slot mask never lets that row see them.
    """

    def __init__(self, batch: int, n_head: int, max_len: int, head_dim: int, *, device, dtype) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.ends: Tensor | None = None  # (B,) per-row lengths; None while every row holds `length`

    @property
    def max_len(self) -> int:
        return self.k.shape[2]

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v: (B, H, t, hd) -> all cached keys/values (B, H, length + t, hd)."""
        t = k.shape[2]
        end = self.length + t
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_len}")
        if self.ends is None:
            self.k[:, :, self.length : end] = k
            self.v[:, :, self.length : end] = v
        else:  # row b writes slots ends[b] .. ends[b] + t - 1
            slots = (self.ends[:, None] + torch.arange(t, device=k.device))[:, None, :, None]  # (B, 1, t, 1)
            slots = slots.expand(-1, k.shape[1], -1, k.shape[3])  # (B, H, t, hd)
            self.k.scatter_(2, slots, k)
            self.v.scatter_(2, slots, v)
            self.ends = self.ends + t
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def select(self, rows: Tensor) -> "KVCache":
        """A cache holding the given rows (B',) of this one, e.g. one chosen candidate per row."""
        new = object.__new__(KVCache)
        new.k, new.v, new.length = self.k[rows], self.v[rows], self.length
        new.ends = self.ends[rows] if self.ends is not None else None
        return new

    def truncate(self, length: int | Tensor) -> None:
        """Keep the first `length` slots: an int for every row, or a (B,) tensor per row."""
        if isinstance(length, int):
            self.length = min(self.length, length)
            if self.ends is not None:
                self.ends = self.ends.clamp(max=length)
            return
        current = self.ends if self.ends is not None else torch.full_like(length, self.length)
        self.ends = torch.minimum(current, length)
        self.length = int(self.ends.max())


class Attention(nn.Module):
    """Multi-head attention. Causal self-attention, or cross-attention to another sequence (FTP: the pseudo-sequence)."""

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

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys/values of `x` (for cross-attention computed once per attended sequence). (B, S, d) -> 2x (B, H, S, hd)."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(
        self,
        x: Tensor,  # (B, t, d)
        cross_kv: tuple[Tensor, Tensor] | None = None,
        cache: KVCache | None = None,
        mask: Tensor | None = None,  # (B or 1, 1, t, S) bool, True = may attend; None = plain causal
        weights: list[Tensor] | None = None,
    ) -> Tensor:
        """With `weights` (a list), attention is computed explicitly and its probabilities
        (B, H, t, S) are appended: SDPA does not return them."""
        B, t, d = x.shape
        q = self._heads(self.q(x))  # (B, H, t, hd)
        is_causal = False
        if cross_kv is not None:  # cross-attention: every query sees the whole attended sequence
            k, v = cross_kv
        else:
            k, v = self.keys_values(x)
            past = 0
            if cache is not None:
                past = cache.length
                k, v = cache.append(k, v)  # (B, H, past + t, hd)
            if self.causal and t > 1 and mask is None:
                if past == 0 and weights is None:
                    is_causal = True
                else:  # query i sits at absolute position past + i
                    mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
        dropout = self.dropout if self.training else 0.0
        if weights is None:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=dropout)
        else:
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, t, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            weights.append(probs)
            y = F.dropout(probs, dropout) @ v
        y = y.transpose(1, 2).reshape(B, t, d)  # (B, t, d)
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
        cross_kv: tuple[Tensor, Tensor] | None = None,
        mask: Tensor | None = None,  # self-attention mask, see Attention.forward
        weights: list[Tensor] | None = None,  # receives the self-attention probabilities
    ) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache=cache, mask=mask, weights=weights)
        if self.cross is not None:
            x = x + self.cross(self.ln_x(x), cross_kv=cross_kv)
        return x + self.mlp(self.ln_2(x))


def init_module(module: nn.Module, n_residual_layers: int) -> None:
    """GPT-2 init of one module (not its children): weights N(0, 0.02), residual projections
    scaled by 1/sqrt(2 * layers), zero biases, LayerNorm to identity, other parameters zero."""
    if isinstance(module, nn.Linear):
        std = 0.02 / (2 * n_residual_layers) ** 0.5 if getattr(module, "residual_out", False) else 0.02
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    else:  # parameters a module holds itself, e.g. FTP's learned decoder start vector: zero
        for p in module.parameters(recurse=False):
            nn.init.zeros_(p)


def init_weights(module: nn.Module, n_residual_layers: int) -> None:
    for sub in module.modules():
        init_module(sub, n_residual_layers)
