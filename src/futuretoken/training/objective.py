"""The training objective as sums, and the validation loss computed the same way.

A step's loss is a mean over the targets of the *global* batch: every micro-batch of every
process contributes its summed, distance-weighted cross-entropy and the weight of its counted
targets, and only the totals are divided. So the gradient of b rows x 4 micro-batches equals
that of 4b rows at once, and that of 2 processes x b rows equals 1 process x 2b rows, however
many end-of-text tokens mask targets in each part.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..data import WindowSampler
from ..model import LanguageModel
from . import distributed


class LossModule(nn.Module):
    """forward(tokens) -> (weighted_sum, stats): gives DDP/FSDP a forward to hook into.

    weighted_sum: scalar the backward runs on (the sum of gamma^(k-1) * CE over counted targets).
    stats: (2 + 2N,) float64 [weighted_sum, weight, CE sum by distance (N), targets by distance (N)],
    detached; summed over micro-batches and processes before anything is divided (`summarise`).
    """

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        out = self.model.loss(tokens)
        parts = (out.weighted_sum.detach()[None], out.weight[None], out.ce_sum, out.n_targets)
        return out.weighted_sum, torch.cat([p.double() for p in parts])


def summarise(stats: Sequence[float]) -> dict[str, float | list[float]]:
    """Summed stats (LossModule layout) -> {"loss", "next_token_loss", "per_distance"}."""
    N = (len(stats) - 2) // 2
    per_k = [c / max(n, 1.0) for c, n in zip(stats[2 : 2 + N], stats[2 + N : 2 + 2 * N])]
    return {"loss": stats[0] / max(stats[1], 1e-12), "next_token_loss": per_k[0], "per_distance": per_k}


@torch.no_grad()
def evaluate(model: LanguageModel | nn.Module, sampler: WindowSampler, n_batches: int, device: torch.device,
             amp: torch.dtype | None = None, info: distributed.DistInfo | None = None) -> dict[str, float | list[float]]:
    """Loss over `n_batches` fixed validation batches: the FTP total, next-token loss and per distance,
    each a mean over all counted targets (of all processes, when `info` says there are several).

    `model` is a LanguageModel or its (possibly DDP/FSDP-wrapped) LossModule: sharded
    parameters are only gathered when the call goes through the wrapper's forward.
    """
    loss_fn = LossModule(model) if isinstance(model, LanguageModel) else model
    was_training = loss_fn.training
    loss_fn.eval()
    total = None
    for i in range(n_batches):
        tokens = sampler.batch(step=i).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            _, stats = loss_fn(tokens)
        total = stats if total is None else total + stats
    loss_fn.train(was_training)
    return summarise(distributed.sum_across(total, info or distributed.DistInfo()).tolist())
