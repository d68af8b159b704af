"""Deterministic batches of random windows: a step's global batch is a pure function of the seed
and the step, so a resumed run sees exactly the data an uninterrupted one would, and the same
global batch however it is split over micro-steps and processes."""

from __future__ import annotations

import numpy as np
import torch


class WindowSampler:
    """Random windows of `window` tokens from a 1-D token array.

    The global batch of step s (batch_size * accum * world windows) is drawn once from a
    generator seeded by (seed, s); micro-step m of process r takes rows
    [(m * world + r) * batch_size, ... + batch_size). So 1 process with 4b rows, 1 process with
    b rows x 4 micro-steps and 4 processes with b rows see the same windows in every step.
    """

    def __init__(self, tokens: np.ndarray, window: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1, accum: int = 1) -> None:
        if len(tokens) < window:
            raise ValueError(
                f"the token split has {len(tokens)} tokens, fewer than one window of {window}; "
                "use a larger corpus or a smaller block_size"
            )
        self.tokens, self.window, self.batch_size = tokens, window, batch_size
        self.seed, self.rank, self.world, self.accum = seed, rank, world, accum

    def batch(self, step: int, micro: int = 0) -> torch.Tensor:
        """(batch_size, window) int64 tokens of micro-step `micro` of step `step`, for this process."""
        rng = np.random.default_rng([self.seed, step])
        starts = rng.integers(0, len(self.tokens) - self.window + 1, size=self.batch_size * self.accum * self.world)
        first = (micro * self.world + self.rank) * self.batch_size
        rows = np.stack([np.asarray(self.tokens[s : s + self.window], dtype=np.int64)
                         for s in starts[first : first + self.batch_size]])
        return torch.from_numpy(rows)
