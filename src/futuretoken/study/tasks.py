"""The toy tasks of a study (eval/registry.py TASKS): each task's corpus generated once, every arm and
seed trained on it, then scored problem by problem (eval/tasks.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import checkpoint_step, list_checkpoints
from ..config import RunConfig
from ..eval import registry
from ..eval.matched import MatchedPair
from ..eval.tasks import (
    KeptCheckpoints,
    LossOf,
    TaskCheckpoints,
    TaskSettings,
    equal_compute_checkpoint,
    score_arms,
    training_flops,
)
from ..training import train, train_all
from ..training.cooldown import cooldown_branch, stable_steps
from ..training.optim import decay_steps
from .annealed import anneal_match, annealed_candidates

ConfigsFor = Callable[[Path, Path, dict, dict], dict[str, dict[int, RunConfig]]]


@dataclass(frozen=True)
class AnnealedCheckpoints:
    """Task runs with a warmup-stable-decay schedule: every compared checkpoint is annealed, a run's end or
    a cooldown's (study/annealed.py), the cooldowns trained on demand."""

    tolerance: float  # answer loss: cooldowns are tried while the best candidate is further than this

    def matched(self, run: Path, base_run: Path, loss_of: LossOf) -> tuple[MatchedPair, Path, Path]:
        runs = {"arm": run, "baseline": base_run}
        losses = {side: {checkpoint_step(c): loss_of(c) for c in list_checkpoints(r)} for side, r in runs.items()}
        pair = anneal_match(runs, losses, lambda side, cooldown: loss_of(list_checkpoints(cooldown)[-1]),
                            self.tolerance)
        return pair, annealed_candidates(run)[pair.step_a].checkpoint, annealed_candidates(base_run)[pair.step_b].checkpoint

    def equal_compute(self, run: Path, cfg: RunConfig, budget_flops: float) -> Path:
        """The annealed run as long as the budget allows: the cooldown from the latest stable checkpoint
        whose end fits it (the run's end when the whole run fits; kept checkpoints when none does)."""
        fits = lambda steps: training_flops(cfg, steps) <= budget_flops * 1.0001  # noqa: E731
        if fits(cfg.train.max_steps):
            return list_checkpoints(run)[-1]
        starts = [s for s in stable_steps(run) if fits(s + decay_steps(cfg.train))]
        if not starts:
            return equal_compute_checkpoint(run, cfg, budget_flops)
        branch = cooldown_branch(run, max(starts))
        train(branch, resume=True)
        return list_checkpoints(branch.train.out_dir)[-1]


def run_tasks(settings: TaskSettings, configs_for: ConfigsFor, baseline: str, workers: int, out_dir: Path,
              device: str, matched_tolerance: float = 0.015) -> dict:
    """Prepare, train and score every task switched on; returns {task name: eval.tasks.score_arms(...)}.
    `configs_for(data_dir, runs_dir, train_overrides, model_overrides)` -> arm -> seed -> run config.
    Warmup-stable-decay runs are compared at annealed checkpoints (pairs within `matched_tolerance`
    when cooldowns can reach it), cosine runs at kept ones."""
    results = {}
    train_overrides = {"max_steps": settings.max_steps, "keep_every": settings.keep_every,
                       "ckpt_interval": settings.keep_every, "eval_interval": settings.keep_every,
                       "warmup_steps": min(100, settings.max_steps // 10),
                       "decay_steps": None}  # a warmup-stable-decay run decays over its last fifth
    for task in registry.TASKS:
        if not getattr(settings, task.key):
            continue
        task_dir = out_dir / task.key
        data_dir = task_dir / "data"
        if not (data_dir / "manifest.json").is_file():
            task.prepare_corpus(data_dir, n_docs=settings.documents, seed=settings.seed, tokenizer=settings.tokenizer,
                                **task.corpus_args(settings))
        configs = configs_for(data_dir, task_dir / "runs", train_overrides, {"block_size": settings.block_size})
        configs = {arm: by_seed for arm, by_seed in configs.items() if not settings.arms or arm in settings.arms}
        train_all([cfg for by_seed in configs.values() for cfg in by_seed.values()], workers)
        answers = task.answers(settings) if task.answers is not None else None
        wsd = next(iter(configs[baseline].values())).train.schedule == "wsd"
        checkpoints: TaskCheckpoints = AnnealedCheckpoints(matched_tolerance) if wsd else KeptCheckpoints()
        results[task.name] = score_arms(configs, baseline, task.outcomes, settings, device, task_dir / "outcomes",
                                        answers, checkpoints)
    return results
