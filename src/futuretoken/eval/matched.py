"""Pick the FTP/GPT checkpoint pair to compare: the paper's claims hold "at the same
next-token perplexity", so every other number is measured on a matched pair.

Rule: the run whose best checkpoint is worse fixes the level (its best checkpoint);
the other run contributes the checkpoint whose loss is closest to that level. This
gives the best-trained pair that is matched, rather than a trivially matched pair of
untrained checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MatchedPair:
    step_a: int
    step_b: int
    loss_a: float
    loss_b: float

    @property
    def gap(self) -> float:
        return abs(self.loss_a - self.loss_b)


def pick_matched_pair(losses_a: dict[int, float], losses_b: dict[int, float]) -> MatchedPair:
    """losses_x: checkpoint step -> validation next-token loss of run x."""
    if not losses_a or not losses_b:
        raise ValueError("both runs need at least one evaluated checkpoint to be matched")
    best_a, best_b = min(losses_a, key=losses_a.get), min(losses_b, key=losses_b.get)
    if losses_a[best_a] >= losses_b[best_b]:  # a is the weaker run: it sets the level
        step_b = min(losses_b, key=lambda s: (abs(losses_b[s] - losses_a[best_a]), s))
        return MatchedPair(best_a, step_b, losses_a[best_a], losses_b[step_b])
    step_a = min(losses_a, key=lambda s: (abs(losses_a[s] - losses_b[best_b]), s))
    return MatchedPair(step_a, best_b, losses_a[step_a], losses_b[best_b])
