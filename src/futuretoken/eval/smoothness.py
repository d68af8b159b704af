"""E3: how smoothly the state vectors h_t move along a text (cosine of adjacent positions)."""

from __future__ import annotations

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
def smoothness(model, batches: list[Tensor]) -> dict[str, float]:
    """Mean adjacent cosine, raw and centred, over held-out token batches of shape (B, T)."""
    model.eval()
    device = next(model.parameters()).device
    hidden = torch.cat([model(b.to(device)).hidden.float() for b in batches])  # (n, T, d)
    centre = hidden.reshape(-1, hidden.shape[-1]).mean(0)
    raw, centred = adjacent_cosine(hidden), adjacent_cosine(hidden, centre)
    return {"cosine": raw.mean().item(), "cosine_std": raw.std().item(),
            "cosine_centred": centred.mean().item(), "cosine_centred_std": centred.std().item()}
