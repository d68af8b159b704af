"""Matched pairs of annealed checkpoints: every compared model sits at the end of its schedule.

A cosine run's kept checkpoints are at different points of one schedule (a mid-run checkpoint is
still at a high learning rate), so pairing them mixes annealed and unannealed models. With
warmup-stable-decay runs (train.schedule = "wsd") every candidate is annealed: a run's end, or
the end of a cooldown branch from one of its stable checkpoints (training/cooldown.py), which is
exactly the run that would have been that long. The weaker run's end fixes the level (its
next-token loss on the selection half); the other run's annealed candidate nearest to it is its
match. Cooldowns are trained on demand: from the stable checkpoint whose loss, less the run's
measured anneal drop (the nearest finished cooldown's, else the run's own end's), lands nearest the
level, again while the best candidate is further than `tolerance` from it (at most `max_cooldowns`
new ones per call).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import checkpoint_name, checkpoint_step, list_checkpoints
from ..eval.matched import MatchedPair
from ..training import train
from ..training.cooldown import cooldown_branch, cooldown_dir, run_config, stable_steps
from ..training.optim import decay_steps

SelectionLoss = Callable[[str, Path], float]  # ("arm" | "baseline", a cooldown folder) -> its end's selection loss


@dataclass(frozen=True)
class Candidate:
    step: int  # optimizer steps trained
    checkpoint: Path
    schedule: str  # where it sits in its schedule, as the report says


def cosine_candidates(run_dir: Path) -> dict[int, Candidate]:
    """Every kept checkpoint of a run (a cosine schedule: the old protocol, mixed schedule positions)."""
    max_steps = run_config(run_dir).train.max_steps
    return {checkpoint_step(c): Candidate(checkpoint_step(c), c, f"cosine, step {checkpoint_step(c)} of {max_steps}")
            for c in list_checkpoints(run_dir)}


def annealed_candidates(run_dir: Path) -> dict[int, Candidate]:
    """A WSD run's end and the ends of its finished cooldowns, by steps trained."""
    cfg = run_config(run_dir)
    end = cfg.train.max_steps
    out = {end: Candidate(end, run_dir / "checkpoints" / checkpoint_name(end), f"wsd, end of {end} steps")}
    for s in stable_steps(run_dir):
        branch_end = s + decay_steps(cfg.train)
        ckpt = cooldown_dir(run_dir, s) / "checkpoints" / checkpoint_name(branch_end)
        if branch_end < end and ckpt.is_dir():
            out[branch_end] = Candidate(branch_end, ckpt, f"wsd, cooldown from step {s} ({branch_end} steps)")
    return out


def plan_cooldown(run_dir: Path, stable_losses: dict[int, float], end_loss: float, level: float,
                  tried: set[int], cooled: dict[int, float] | None = None) -> int | None:
    """The next stable step to cool down from: its predicted annealed loss is its loss less an anneal drop,
    the one measured by the finished cooldown from the nearest stable step (`cooled`: its start -> its end's
    loss), else the run's own (its last stable checkpoint's loss less its end's). None when every one is tried."""
    cfg = run_config(run_dir)
    D, end = decay_steps(cfg.train), cfg.train.max_steps
    known = [s for s in stable_steps(run_dir) if s in stable_losses]
    untried = [s for s in known if s + D < end and s not in tried and s not in (cooled or {})]
    if not untried:
        return None
    measured = {s: stable_losses[s] - loss for s, loss in (cooled or {}).items() if s in stable_losses}

    def drop(s: int) -> float:  # the anneal drop grows early in training: the nearest measurement predicts best
        return measured[min(measured, key=lambda m: (abs(m - s), m))] if measured else stable_losses[max(known)] - end_loss

    return min(untried, key=lambda s: (abs(stable_losses[s] - drop(s) - level), s))


def anneal_match(runs: dict[str, Path], losses: dict[str, dict[int, float]], loss_of: SelectionLoss,
                 tolerance: float, max_cooldowns: int = 3) -> MatchedPair:
    """The matched pair of annealed checkpoints of two WSD runs, runs = {"arm": RUN, "baseline": RUN},
    cooldowns trained as needed (existing ones are reused, and at most `max_cooldowns` more are trained in
    this call). `losses[side]`: selection losses of the run's kept checkpoints.
    The pair's steps are keys of `annealed_candidates` of each run."""
    ends = {k: run_config(r).train.max_steps for k, r in runs.items()}
    annealed = {k: {s: (losses[k][s] if s == ends[k] else loss_of(k, c.checkpoint.parent.parent))
                    for s, c in annealed_candidates(r).items()} for k, r in runs.items()}
    weaker = "arm" if annealed["arm"][ends["arm"]] >= annealed["baseline"][ends["baseline"]] else "baseline"
    other = "baseline" if weaker == "arm" else "arm"
    level = annealed[weaker][ends[weaker]]
    tried: set[int] = set()
    D = decay_steps(run_config(runs[other]).train)
    while len(tried) < max_cooldowns and min(abs(v - level) for v in annealed[other].values()) > tolerance:
        cooled = {s - D: v for s, v in annealed[other].items() if s != ends[other]}  # cooldown start -> end loss
        step = plan_cooldown(runs[other], losses[other], annealed[other][ends[other]], level, tried, cooled)
        if step is None:
            break
        tried.add(step)
        cfg = cooldown_branch(runs[other], step)
        if cfg.train.max_steps not in annealed[other]:
            train(cfg, resume=True)
            annealed[other][cfg.train.max_steps] = loss_of(other, Path(cfg.train.out_dir))
    best = min(annealed[other], key=lambda s: (abs(annealed[other][s] - level), s))
    steps = {weaker: ends[weaker], other: best}
    return MatchedPair(steps["arm"], steps["baseline"], annealed["arm"][steps["arm"]],
                       annealed["baseline"][steps["baseline"]])
