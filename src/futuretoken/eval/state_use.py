"""E1 per window, and validity gate 2: does FTP's prediction actually use h_t?

FTP's decoder receives the current token x_t as its first input, so a shallow decoder can
predict x_{t+1} from x_t alone, like a bigram table, and leave h_t unused. The gate measures
the next-token loss when FTP's own state is replaced
- by the mean state (over every position of the batch): the decoder keeps x_t but loses all
  that h_t says about this position's past;
- by the state of another, random position (h shuffled across the batch's positions);
and reports the loss increase over FTP's own states, per window, with a 95% interval.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .stats import mean_ci


def _per_window_ce(logits: Tensor, targets: Tensor) -> Tensor:
    """logits (B, T, V), targets (B, T) -> (B,) mean cross-entropy of each window."""
    B, T, V = logits.shape
    return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1), reduction="none").view(B, T).mean(1)


@torch.no_grad()
def next_token_losses(model, windows: Tensor, batch_size: int = 8) -> np.ndarray:
    """(n,) next-token cross-entropy of each window (n, T + 1): targets windows[:, 1:]."""
    device = model.head_weight.device
    out = []
    for b in range(0, len(windows), batch_size):
        w = windows[b : b + batch_size].to(device)
        out.append(_per_window_ce(model(w[:, :-1]).logits, w[:, 1:]).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def state_ablation(model, windows: Tensor, batch_size: int = 8, seed: int = 0) -> dict:
    """FTP's next-token loss per window (n, T + 1) with its own h_t, the mean h and shuffled h.

    Returns {"own", "mean_state", "shuffled_state"}: per-window losses, and {"increase": {variant:
    mean and 95% CI of the per-window loss increase over "own"}}.
    """
    if model.model_type != "ftp":
        raise ValueError("the state ablation measures FTP's use of h_t; this is a "
                         f"{model.model_type.upper()} model, whose prediction is h_t itself")
    device = model.head_weight.device
    gen = torch.Generator().manual_seed(seed)
    losses: dict[str, list[Tensor]] = {"own": [], "mean_state": [], "shuffled_state": []}
    for b in range(0, len(windows), batch_size):
        w = windows[b : b + batch_size].to(device)
        x, y = w[:, :-1], w[:, 1:]
        B, T = x.shape
        h = model.encoder(x).reshape(B * T, -1)  # (B*T, d)
        variants = {"own": h, "mean_state": h.mean(0, keepdim=True).expand_as(h).contiguous(),
                    "shuffled_state": h[torch.randperm(B * T, generator=gen).to(device)]}
        for name, state in variants.items():
            features = model.decode(x.reshape(B * T, 1), model.cross_kv(state), state)[:, 0]  # (B*T, d)
            losses[name].append(_per_window_ce(model.head(features).view(B, T, -1), y).cpu())
    per_window = {k: torch.cat(v).numpy() for k, v in losses.items()}
    return {**{k: v.tolist() for k, v in per_window.items()},
            "increase": {k: mean_ci(per_window[k] - per_window["own"]) for k in ("mean_state", "shuffled_state")}}
