"""Multi-token prediction with sequential modules, DeepSeek-V3 style (arXiv 2412.19437, section 2.2).

The main model is a GPT (encoder -> final norm -> tied head: next token). Module k = 1..D
(D = horizon - 1) keeps the causal chain at every depth: at position t it combines the
previous depth's state h^{k-1}_t (h^0 = the encoder's output h_t) with the embedding of
x_{t+k},

    h'^k_t = W_k [LayerNorm(h^{k-1}_t) ; LayerNorm(Emb(x_{t+k}))]        # (2d -> d)
    h^k    = Block_k(h'^k)                                            # causal over t
    P(x_{t+k+1}) = head(final norm(h^k_t))                            # shared norm and head

so it sees tokens up to x_{t+k} and predicts x_{t+k+1}. The embedding, final norm and head
are the main model's. h^0 is taken after the encoder's final norm (the state every other part
of the library reads); the module's own LayerNorm re-normalises it, as it does h^k for k >= 1.

Loss, per position: next-token CE + lambda * (1/D) * sum_k CE_k (`mtp_lambda`), targets past
an end-of-text token masked as for FTP, averaged over positions (`loss.per_position`; a masked
target adds nothing). The next-token path is a GPT's: h_t, caches, `ar` and the export are GPT's.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import Block, KVCache
from .flops import block_forward_flops, encoder_forward_flops
from .gpt import GPT
from .loss import LossOutput, future_loss, future_targets, per_position


class MTPModule(nn.Module):
    """One depth of MTP-seq: (previous state, embedding of the token k ahead) -> new state, causal."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        d = config.n_embd
        self.hnorm = nn.LayerNorm(d, bias=config.bias)
        self.enorm = nn.LayerNorm(d, bias=config.bias)
        self.proj = nn.Linear(2 * d, d, bias=config.bias)
        self.block = Block(d, config.n_head, config.bias, config.dropout)

    def forward(self, h: Tensor, emb: Tensor, cache: KVCache | None = None, mask: Tensor | None = None) -> Tensor:
        """h, emb: (B, t, d) -> h^k (B, t, d) before the final norm; cache and mask as for a Block."""
        x = self.proj(torch.cat([self.hnorm(h), self.enorm(emb)], dim=-1))  # (B, t, d)
        return self.block(x, cache=cache, mask=mask)


class MTPSeq(GPT):
    model_type = "mtp_seq"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.mtp = nn.ModuleList(MTPModule(config) for _ in range(config.horizon - 1))  # modules 1..D
        self._init_weights(self.mtp)

    @property
    def n_residual_layers(self) -> int:
        return self.config.n_layer + self.config.horizon - 1  # the deepest path runs through every module

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @staticmethod
    def forward_flops_per_token(c: ModelConfig) -> float:  # module k: projection 2d -> d, one block, the head
        d, V = c.n_embd, c.padded_vocab_size
        return encoder_forward_flops(c) + 2 * d * V + (c.horizon - 1) * (4 * d * d + block_forward_flops(c) + 2 * d * V)

    def side_blocks(self) -> list[nn.Module]:
        return [module.block for module in self.mtp]

    def future_features(self, tokens: Tensor) -> Tensor:
        """tokens (B, T + D) -> (B, T, D + 1, d): what predicts x_{t+1} (the encoder's h_t) and, for
        k = 1..D, module k's state at t after the final norm (predicts x_{t+k+1})."""
        D = self.horizon - 1
        T = tokens.shape[1] - D
        state = self.encoder(tokens[:, :T])  # (B, T, d): h^0
        features = [state]
        for k, module in enumerate(self.mtp, start=1):
            state = module(state, self.encoder.wte(tokens[:, k : k + T]))  # (B, T, d): h^k, reads x_{t+k}
            features.append(self.encoder.ln_f(state))
        return torch.stack(features, 2)

    def loss(self, tokens: Tensor) -> LossOutput:
        """tokens: (B, T + N) -> per position, next-token CE + lambda * the modules' mean CE."""
        c = self.config
        N = c.horizon
        features = self.future_features(tokens[:, :-1])  # (B, T, N, d)
        B, T, _, d = features.shape
        _, targets = future_targets(tokens, N, c.eot_token)  # (B, T, N): x_{t+1} .. x_{t+N}
        # (N,): 1, then lambda / D each; float64 so that a float64 model's loss is exact (future_loss casts down)
        weights = torch.tensor([1.0] + [c.mtp_lambda / max(N - 1, 1)] * (N - 1), dtype=torch.float64)
        return per_position(future_loss(features.reshape(B * T, N, d), self.head_weight, targets.reshape(B * T, N),
                                        weights, c.loss_chunk, c.vocab_size, c.loss_impl))
