"""Multi-token prediction with N parallel heads (Gloeckle et al. 2024, arXiv 2404.19737).

The encoder's first L-1 blocks are the shared trunk, whose output z_t feeds N heads; head k
is one transformer block, then the shared final LayerNorm and the tied unembedding, and
predicts x_{t+k}. As in the paper's released code, head 1 is the encoder's last block: the
next-token path (encoder -> final norm -> head) is exactly a GPT of the same depth, so h_t,
the KV cache, `ar` generation and the Hugging Face export are GPT's. Heads 2..N are extra
blocks that only the loss and the speculative draft run (each on the sequence of z_t, causal).
Every head's path is n_layer blocks deep, so the init scales residual projections as GPT's does.

Loss, per position: the sum over heads of their cross-entropies (a target past an
end-of-text token is masked, as for FTP), averaged over positions (`loss.per_position`).

`mtp_backward = "sequential"` is the paper's memory-saving order (its Fig. 2): the trunk runs
forward, then each head (head 1 included) runs forward and backward at once from a detached z,
so only one head's activations and logits exist at a time; the gradients the heads leave on z
and on their parameters wait (summed) for the main backward, which scales them by the incoming
gradient (the loss is linear in each head's sum) and carries z's on through the trunk. The same
loss and gradients as "joint", without recomputation; the price is one gradient buffer per
parameter the heads use, held from the forward on (the paper's implementation accumulates
them into .grad at that point).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import Block, KVCache
from .flops import block_forward_flops, encoder_forward_flops
from .gpt import GPT
from .loss import LossOutput, future_loss, future_targets, per_position


class MTP(GPT):
    model_type = "mtp"

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.heads = nn.ModuleList(  # heads 2..N; head 1 is encoder.blocks[-1]
            Block(config.n_embd, config.n_head, config.bias, config.dropout) for _ in range(config.horizon - 1)
        )
        self._init_weights(self.heads)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @staticmethod
    def forward_flops_per_token(c: ModelConfig) -> float:  # heads 2..N: one block each; an unembedding per head
        d, V = c.n_embd, c.padded_vocab_size
        return encoder_forward_flops(c) + (c.horizon - 1) * block_forward_flops(c) + c.horizon * 2 * d * V

    def side_blocks(self) -> list[nn.Module]:
        return list(self.heads)  # head 1 is the encoder's last block

    def sharded_blocks(self) -> list[nn.Module]:
        # Head 1 (the encoder's last block) stays in the root group with heads 2..N: the sequential
        # head backward passes all their parameters into one autograd function, so they must be
        # gathered for the whole loss.
        return list(self.encoder.blocks[:-1])

    def trunk_and_head1(self, idx: Tensor, cache: list[KVCache] | None = None, **encoder_args) -> tuple[Tensor, Tensor]:
        """idx (B, t) -> (z, h): the trunk's output z (B, t, d), the input of the encoder's last block,
        and head 1's output h (B, t, d) after the final norm (the encoder's output, as for GPT)."""
        return self.encoder.trunk_and_last(idx, cache, **encoder_args)

    def head_features(self, z: Tensor, k: int, cache: KVCache | None = None, mask: Tensor | None = None) -> Tensor:
        """Head k on trunk states z (B, t, d) -> features (B, t, d) after the shared final norm. Head 1
        is the encoder's last block (its cache is the encoder's: incremental passes use trunk_and_head1)."""
        block = self.encoder.blocks[-1] if k == 1 else self.heads[k - 2]
        return self.encoder.ln_f(block(z, cache=cache, mask=mask))

    def future_features(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) -> (B, T, N, d): what head k sees at position t, for k = 1..N."""
        z, h = self.trunk_and_head1(tokens)
        return torch.stack([h] + [self.head_features(z, k) for k in range(2, self.horizon + 1)], 2)

    def loss(self, tokens: Tensor) -> LossOutput:
        """tokens: (B, T + N) -> per position, the summed cross-entropy of heads 1..N (x_{t+1} .. x_{t+N})."""
        c = self.config
        N, W = c.horizon, self.head_weight
        _, targets = future_targets(tokens, N, c.eot_token)  # (B, T, N)
        targets = targets.reshape(-1, N)  # (B*T, N)

        def head_loss(features: Tensor, k: int, n: int = 1) -> LossOutput:  # features (B, T, n, d): heads k..k+n-1
            return future_loss(features.reshape(-1, n, c.n_embd), W, targets[:, k - 1 : k - 1 + n], 1.0, c.loss_chunk,
                               c.vocab_size, c.loss_impl)

        if N == 1:
            return per_position(head_loss(self.encoder(tokens[:, :-1])[:, :, None], 1))
        heads = [*self.encoder.blocks[-1].parameters(), *self.heads.parameters(), *self.encoder.ln_f.parameters(), W]
        params = [p for p in heads if p.requires_grad]
        if c.mtp_backward == "joint" or not torch.is_grad_enabled() or not params:
            return per_position(head_loss(self.future_features(tokens[:, :-N]), 1, N))
        z = self.encoder.trunk(tokens[:, :-N])  # (B, T, d): the trunk, the last block's input
        total, ce_sum, n_targets = _SequentialHeads.apply(
            lambda zk, k: head_loss(self.head_features(zk, k)[:, :, None], k), N, z, *params)
        return per_position(LossOutput(total, n_targets[0].to(total.dtype), ce_sum, n_targets))


class _SequentialHeads(torch.autograd.Function):
    """Heads 1..N run forward and backward one after another from a detached z, during forward.

    forward(head_loss, N, z (B, T, d), *params) -> (summed CE of heads 1..N, ce_sum (N,), n_targets (N,)),
    where head_loss(z, k) is head k's LossOutput and params are every parameter the heads use that
    needs a gradient. Only the summed gradients of z and of params are kept for backward.
    """

    @staticmethod
    def forward(ctx, head_loss, N: int, z: Tensor, *params: Tensor):
        grads = [torch.zeros_like(z)] + [torch.zeros_like(p) for p in params]
        total, ce_sum, n_targets = 0.0, [], []
        for k in range(1, N + 1):
            with torch.enable_grad():
                zk = z.detach().requires_grad_()
                out = head_loss(zk, k)
                step = torch.autograd.grad(out.weighted_sum, [zk, *params], allow_unused=True)
            for acc, g in zip(grads, step):
                if g is not None:
                    acc += g
            total = total + out.weighted_sum.detach()
            ce_sum.append(out.ce_sum)
            n_targets.append(out.n_targets)
        ctx.save_for_backward(*grads)
        ce_sum, n_targets = torch.cat(ce_sum), torch.cat(n_targets)
        ctx.mark_non_differentiable(ce_sum, n_targets)
        return total, ce_sum, n_targets

    @staticmethod
    def backward(ctx, grad_total: Tensor, *_unused):
        return None, None, *(g * grad_total.to(g.dtype) for g in ctx.saved_tensors)
