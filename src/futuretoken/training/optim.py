"""AdamW with the usual no-decay groups, and the learning-rate schedules: linear warm-up, then cosine
to min_lr at max_steps, or warmup-stable-decay (WSD): constant, then a linear decay to min_lr over the
last decay_steps. A WSD run's schedule up to step s does not depend on max_steps as long as s stays
before the decay, so any stable checkpoint can branch off into its own decay (a cooldown,
training/cooldown.py) and be annealed like the run's end."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """Matrices decay; biases and norm gains do not (nanoGPT convention).

    Fused AdamW (CPU and CUDA): one kernel per step, and it can skip an update on the device
    when told that a gradient is not finite (`optimizer.found_inf`), with no host sync.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True)


def decay_steps(cfg: TrainConfig) -> int:
    """The length of a WSD run's final decay."""
    return cfg.decay_steps if cfg.decay_steps is not None else max(1, cfg.max_steps // 5)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        start = cfg.max_steps - decay_steps(cfg)
        if step < start:
            return cfg.lr
        return cfg.lr - min(1.0, (step + 1 - start) / decay_steps(cfg)) * (cfg.lr - cfg.min_lr)
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - cfg.min_lr)
