"""One optimizer step: what `Trainer.fit` runs and `futuretoken bench train` times.

The step never waits for the device: its statistics row stays there, and a non-finite loss or
gradient skips the update on the device (fused AdamW's `found_inf`, the mechanism GradScaler
uses); the trainer reads the rows back at its sync points.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..config import TrainConfig
from . import distributed
from .optim import learning_rate

GRAD_NORM, SKIPPED, STOP = -3, -2, -1  # the last three entries of a statistics row; the loss statistics precede them


@dataclass
class TrainStep:
    """`step(n, batch, stop_requested)` -> the statistics row of optimizer step n (on the device):
    LossModule's stats summed over the global batch, then [gradient norm (before clipping), skipped,
    stop requested] (summed over processes, but the norm: it is the global batch's already).
    `batch(micro)` gives micro-batch `micro` of the step, (b, T + horizon) tokens."""

    loss_module: nn.Module  # LossModule, maybe wrapped by DDP/FSDP (training/parallelize.py)
    optimizer: torch.optim.Optimizer
    cfg: TrainConfig
    horizon: int
    device: torch.device
    amp: torch.dtype | None  # autocast dtype (None: none, e.g. under FSDP's own mixed precision)
    info: distributed.DistInfo

    def __call__(self, step: int, batch: Callable[[int], Tensor], stop_requested: bool = False) -> Tensor:
        tc = self.cfg
        lr = learning_rate(step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = torch.zeros(2 + 2 * self.horizon + 3, dtype=torch.float64, device=self.device)
        for micro in range(tc.grad_accum):
            tokens = batch(micro)
            with distributed.grad_sync(self.loss_module, micro == tc.grad_accum - 1):
                # autocast covers the forward only: backward runs each op in the dtype its forward used
                with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                    weighted_sum, micro_stats = self.loss_module(tokens)
                weighted_sum.backward()  # a sum: the global normaliser is applied to the gradients below
            stats[:GRAD_NORM] += micro_stats
        stats[STOP].fill_(float(stop_requested))
        stats = distributed.sum_across(stats, self.info)
        params = [p for p in self.loss_module.parameters() if p.grad is not None]
        # DDP and FSDP average gradients over processes; we want their sum over the global weight.
        scale = (self.info.world / stats[1].clamp_min(1e-12)).float()
        torch._foreach_mul_([p.grad for p in params], scale)
        norm = torch.nn.utils.clip_grad_norm_(params, tc.grad_clip if tc.grad_clip > 0 else math.inf)
        if hasattr(norm, "full_tensor"):  # FSDP: a DTensor made of every shard's partial norm
            norm = norm.full_tensor()
        skipped = ~(torch.isfinite(stats[0]) & torch.isfinite(norm))
        self.optimizer.found_inf = skipped.float()  # fused AdamW skips the update (and its step count)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats[SKIPPED] = skipped
        stats[GRAD_NORM] = norm
        return stats
