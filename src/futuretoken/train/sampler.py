"""Deterministic batches of random windows: the batch of (step, micro-step) is a pure function
of the seed, so a resumed run sees exactly the data an uninterrupted one would."""

from __future__ import annotations

import numpy as np
import torch


class WindowSampler:
    """Random windows of `window` tokens from a 1-D token array.

    The global batch of a micro-step is drawn once from a generator seeded by
    (seed, step, micro); process `rank` of `world` takes its slice. One process with
    batch_size * world rows therefore sees the same data as `world` processes together.
    """

    def __init__(self, tokens: np.ndarray, window: int, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        if len(tokens) < window:
            raise ValueError(
                f"the token split has {len(tokens)} tokens, fewer than one window of {window}; "
                "use a larger corpus or a smaller block_size"
            )
        self.tokens, self.window, self.batch_size = tokens, window, batch_size
        self.seed, self.rank, self.world = seed, rank, world

    def batch(self, step: int, micro: int = 0) -> torch.Tensor:
        """(batch_size, window) int64 tokens."""
        rng = np.random.default_rng([self.seed, step, micro])
        starts = rng.integers(0, len(self.tokens) - self.window + 1, size=self.batch_size * self.world)
        mine = starts[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        rows = np.stack([np.asarray(self.tokens[s : s + self.window], dtype=np.int64) for s in mine])
        return torch.from_numpy(rows)
