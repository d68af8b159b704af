"""The toy tasks of a study (eval/registry.py TASKS): each task's corpus generated once, every arm and
seed trained on it, then scored problem by problem (eval/tasks.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..config import RunConfig
from ..eval import registry
from ..eval.tasks import TaskSettings, score_arms
from ..training import train_all

ConfigsFor = Callable[[Path, Path, dict, dict], dict[str, dict[int, RunConfig]]]


def run_tasks(settings: TaskSettings, configs_for: ConfigsFor, baseline: str, workers: int, out_dir: Path,
              device: str) -> dict:
    """Prepare, train and score every task switched on; returns {task name: eval.tasks.score_arms(...)}.
    `configs_for(data_dir, runs_dir, train_overrides, model_overrides)` -> arm -> seed -> run config."""
    results = {}
    train_overrides = {"max_steps": settings.max_steps, "keep_every": settings.keep_every,
                       "ckpt_interval": settings.keep_every, "eval_interval": settings.keep_every,
                       "warmup_steps": min(100, settings.max_steps // 10)}
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
        results[task.name] = score_arms(configs, baseline, task.outcomes, settings, device, task_dir / "outcomes",
                                        answers)
    return results
