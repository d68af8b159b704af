"""E3: how smoothly the state vectors h_t move along a text.

Protocol (windows of T tokens inside held-out documents, at most 10 per document, >= 100):
- the position means are removed: mu_t = mean of h_t over all windows at position t, so what
  remains is what differs between texts, not the position embedding's imprint;
- adjacent: cos(h_t - mu_t, h_{t+1} - mu_{t+1}) along each window, averaged per window;
- cross-document baseline: the same cosine between h_t of a window and h_{t+1} of a window of
  another document (windows paired by a fixed derangement): how similar two unrelated states
  are. A state that barely moves anywhere scores high on both;
- excess = adjacent - cross-document, per window: smoothness that is specific to the text
  (the claim's metric: a constant, uninformative state has excess ~ 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
from torch import Tensor

from .experiment import Claim, Experiment
from .stats import mean_ci
from .windows import document_windows


def adjacent_cosine(hidden: Tensor, mean: Tensor | None = None) -> Tensor:
    """hidden: (B, T, d) -> (B, T-1) cosine(h_t, h_{t+1}); `mean` ((d,) or (T, d)) is subtracted first."""
    if mean is not None:
        hidden = hidden - mean
    return torch.nn.functional.cosine_similarity(hidden[:, :-1], hidden[:, 1:], dim=-1)


def other_document_partner(docs: np.ndarray, seed: int = 0) -> np.ndarray:
    """For each window, the index of a window from a different document (fixed by `seed`)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    partner = np.empty(len(docs), dtype=int)
    for i in range(len(docs)):
        candidates = order[docs[order] != docs[i]]
        if len(candidates) == 0:
            raise ValueError("the cross-document baseline needs windows from at least two held-out documents; fix: hold "
                             "out more documents (futuretoken data prepare --val-fraction 0.2, then train again)")
        partner[i] = candidates[i % len(candidates)]
    return partner


@torch.no_grad()
def states(model, windows: Tensor, batch_size: int = 16) -> Tensor:
    """(n, T, d) h_t of (n, T) token windows, float32 on the CPU."""
    device = model.head_weight.device
    return torch.cat([model.encoder(windows[b : b + batch_size].to(device)).float().cpu()
                      for b in range(0, len(windows), batch_size)])


class SmoothnessResult(TypedDict):
    adjacent: list[float]  # per window
    cross_document: list[float]
    excess: list[float]
    summary: dict[str, dict]  # name -> stats.mean_ci: {"mean", "ci95", "n"}
    raw_adjacent: float
    first_window: list[float]
    windows: int
    documents: int


def smoothness_experiment(model, windows: Tensor, docs: np.ndarray, seed: int = 0) -> SmoothnessResult:
    """E3 on one model: per-window adjacent, cross-document and excess cosines (protocol: module docstring).

    Returns {"adjacent", "cross_document", "excess": per-window lists, "summary": {name: mean and
    95% CI}, "raw_adjacent": mean cosine without removing position means, "first_window": the
    centred adjacent cosine along the first window (for the plot)}.
    """
    hidden = states(model, windows)  # (n, T, d)
    centred = hidden - hidden.mean(0)  # position means removed
    adjacent = adjacent_cosine(centred).mean(1)  # (n,)
    partner = torch.from_numpy(other_document_partner(docs, seed))
    cross = torch.nn.functional.cosine_similarity(centred[:, :-1], centred[partner, 1:], dim=-1).mean(1)
    per_window = {"adjacent": adjacent.numpy(), "cross_document": cross.numpy(),
                  "excess": (adjacent - cross).numpy()}
    return {**{k: v.tolist() for k, v in per_window.items()},
            "summary": {k: mean_ci(v) for k, v in per_window.items()},
            "raw_adjacent": float(adjacent_cosine(hidden).mean()),
            "first_window": adjacent_cosine(centred[:1])[0].tolist(), "windows": len(windows),
            "documents": int(len(np.unique(docs)))}


# --- E3 as the suite measures it ------------------------------------------------------------------
@dataclass
class SmoothnessSettings:
    per_document: int = 10  # windows inside held-out documents, at most this many per document
    min_windows: int = 100


@dataclass(frozen=True)
class SmoothnessItems:
    windows: Tensor  # (n, T) windows inside report-half documents
    docs: np.ndarray  # (n,) their documents


def prepare(data, settings: SmoothnessSettings) -> SmoothnessItems:
    windows, docs = document_windows(data.halves["report"], data.eot, data.block_size, settings.per_document,
                                     settings.min_windows)
    return SmoothnessItems(windows, docs)


def measure(model, items: SmoothnessItems, settings: SmoothnessSettings, seed: int) -> SmoothnessResult:
    return smoothness_experiment(model, items.windows, items.docs, seed=seed)


EXPERIMENT = Experiment(
    "E3", "smoothness", SmoothnessSettings, measure, prepare, floor=measure,
    claims=(Claim("smoothness", "E3: text-specific smoothness (centred adjacent cosine minus cross-document)",
                  lambda r: r["summary"]["excess"]["mean"], margin=0.02, primary=True),))
