"""Scoring the toy tasks (E6 countdown as code, E7 path-star; eval/registry.py TASKS): every arm and
seed is trained on the same generated stream (study/tasks.py), then scored problem by problem.

- Budget: `max_steps` is sized by a pilot so that the baseline is clearly off the floor
  (pass@1 >= the gate's `task_floor`) at the easiest setting; otherwise the task's claims are
  invalid at this scale.
- Problems: `n_eval` unique held-out problems per setting (countdown: specs of the evaluation
  split, never in the training stream; path-star: random graphs from a separate seed).
- Equal tokens: every arm at its last checkpoint (the same number of training tokens).
  Equal compute: each non-baseline arm also at its kept checkpoint whose training FLOPs are
  closest to (not above) the baseline's at the end of training.
Results per arm, setting and seed: pass@1 and the per-problem outcomes (for McNemar's test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import checkpoint_step, list_checkpoints, load_model
from ..config import RunConfig
from ..model import training_flops_per_token
from ..storage import atomic_write


@dataclass
class TaskSettings:
    countdown: bool = True
    pathstar: bool = True
    documents: int = 20000  # generated training documents per task
    max_steps: int = 1500  # training steps of every arm and seed on each task
    keep_every: int = 250  # kept checkpoints (the equal-compute comparison picks among them)
    block_size: int = 64  # task documents are one short line: a short block trains faster
    n_eval: int = 300  # unique held-out problems per setting
    difficulties: tuple[int, ...] = (2, 3)  # countdown: how many numbers, easiest first
    max_number: int = 40  # countdown: numbers are drawn from 1..max_number
    star_degree: int = 2  # path-star: arms
    star_length: int = 3  # path-star: nodes per arm
    star_labels: int = 100  # path-star: node labels are drawn from 0..star_labels-1
    tokenizer: str = "bpe:512"
    arms: tuple[str, ...] = ()  # the arms trained on the tasks (empty: every arm)
    seed: int = 0


def training_flops(cfg: RunConfig, steps: int) -> float:
    tokens = steps * cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size
    return training_flops_per_token(cfg.model, cfg.train.model) * tokens


def equal_compute_checkpoint(run_dir: Path, cfg: RunConfig, budget_flops: float) -> Path:
    """The kept checkpoint of `run_dir` with the most training FLOPs not above `budget_flops`."""
    kept = [c for c in list_checkpoints(run_dir) if training_flops(cfg, checkpoint_step(c)) <= budget_flops * 1.0001]
    return (kept or list_checkpoints(run_dir)[:1])[-1]


def _outcomes_of(ckpt: Path, outcomes, settings: TaskSettings, device: str, cache: Path) -> dict[str, list[bool]]:
    """Per-problem outcomes of one checkpoint, cached (a later call, e.g. after an interruption, reads them)."""
    path = cache / f"{ckpt.parent.parent.parent.name}-{ckpt.parent.parent.name}-{ckpt.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = outcomes(load_model(ckpt, device), settings)
    atomic_write(path, json.dumps(result))
    return result


Outcomes = Callable[[object, TaskSettings], dict[str, list[bool]]]


def score_arms(configs: Mapping[str, Mapping[int, RunConfig]], baseline: str, outcomes: Outcomes,
               settings: TaskSettings, device: str, cache: Path) -> dict:
    """Every arm and seed at its last checkpoint (equal tokens) and, beside the baseline, at equal compute:
    {"n_eval", "max_steps", "seeds": {arm: [its seeds, in the order of every per-seed list]},
    "pass_at_1": {arm: {setting: [per seed]}}, "correct": per-problem outcomes,
    "equal_compute": {arm: {"steps": [...], setting: [per seed]}}}."""
    base_cfg = next(iter(configs[baseline].values()))
    base_flops = training_flops(base_cfg, base_cfg.train.max_steps)
    result = {"n_eval": settings.n_eval, "max_steps": settings.max_steps, "seeds": {}, "pass_at_1": {},
              "correct": {}, "equal_compute": {}}
    for arm, by_seed in configs.items():
        result["seeds"][arm] = sorted(by_seed)
        result["pass_at_1"][arm], result["correct"][arm] = {}, {}
        for seed, cfg in sorted(by_seed.items()):
            run = Path(cfg.train.out_dir)
            solved = _outcomes_of(list_checkpoints(run)[-1], outcomes, settings, device, cache)
            for setting, ok in solved.items():
                result["correct"][arm].setdefault(setting, []).append(ok)
                result["pass_at_1"][arm].setdefault(setting, []).append(sum(ok) / len(ok))
            if arm != baseline:
                ckpt = equal_compute_checkpoint(run, cfg, base_flops)
                same = _outcomes_of(ckpt, outcomes, settings, device, cache)
                entry = result["equal_compute"].setdefault(arm, {"steps": []})
                entry["steps"].append(checkpoint_step(ckpt))
                for setting, ok in same.items():
                    entry.setdefault(setting, []).append(sum(ok) / len(ok))
    return result
