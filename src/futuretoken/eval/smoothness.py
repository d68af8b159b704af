"""E3: how smoothly the state vectors h_t move along a text (cosine of adjacent positions)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def adjacent_cosine(hidden: Tensor, mean: Tensor | None = None) -> Tensor:
    """hidden: (B, T, d) -> (B, T-1) cosine(h_t, h_{t+1}).

    With `mean` (d,), the vectors are centred first: raw cosines of transformer states
    are dominated by one common direction, which hides how much the rest moves.
    """
    if mean is not None:
        hidden = hidden - mean
    return torch.nn.functional.cosine_similarity(hidden[:, :-1], hidden[:, 1:], dim=-1)


@torch.no_grad()
def smoothness_stats(model, windows: Tensor) -> dict:
    """E3 on (n, T) token windows: per-window mean adjacent cosine, raw and centred on the mean vector."""
    device = model.head_weight.device
    hidden = torch.cat([model(w[None].to(device)).hidden.float() for w in windows])  # (n, T, d)
    centre = hidden.reshape(-1, hidden.shape[-1]).mean(0)
    out = {"windows": len(windows)}
    for name, cos in (("raw", adjacent_cosine(hidden)), ("centred", adjacent_cosine(hidden, centre))):
        per_window = cos.mean(1)
        out[name] = {"mean": per_window.mean().item(), "std": per_window.std().item(),
                     "se": per_window.std().item() / math.sqrt(len(windows)), "first_text": cos[0].tolist(),
                     "histogram": np.histogram(cos.cpu().numpy(), bins=40, range=(-1, 1))[0].tolist()}
    return out
