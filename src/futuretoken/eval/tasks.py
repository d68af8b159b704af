"""E6 (countdown as code) and E7 (path-star planning): every arm and seed trained on the same
generated stream, then scored problem by problem.

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import checkpoint_step, list_checkpoints, load_model
from ..config import RunConfig
from ..files import atomic_write
from ..model import training_flops_per_token
from ..train import train_all
from .countdown import complete_greedy, iter_problems, prepare_countdown_corpus, score_many
from .pathstar import iter_graphs, prepare_pathstar_corpus


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


ConfigsFor = Callable[[Path, Path, dict, dict], dict[str, dict[int, RunConfig]]]


def unique(problems: Iterator, key: Callable, n: int) -> list:
    """The first n problems of a stream whose key was not seen before."""
    seen, out = set(), []
    for p in problems:
        if key(p) not in seen:
            seen.add(key(p))
            out.append(p)
            if len(out) == n:
                return out
    raise AssertionError("unreachable: problem streams are endless")


def countdown_outcomes(model, settings: TaskSettings) -> dict[str, list[bool]]:
    """{"N numbers": [solved?] per held-out problem} for greedy completions."""
    out = {}
    for d in settings.difficulties:
        problems = unique(iter_problems(settings.seed + 1000 + d, (d,), "eval", max_number=settings.max_number),
                          lambda p: p.prompt, settings.n_eval)
        programs = complete_greedy(model, [p.prompt for p in problems], max_new_tokens=48)
        out[f"{d} numbers"] = score_many(problems, programs)
    return out


def pathstar_outcomes(model, settings: TaskSettings) -> dict[str, list[bool]]:
    degree, length = settings.star_degree, settings.star_length
    graphs = unique(iter_graphs(settings.seed + 2000, ((degree, length),), settings.star_labels), lambda g: g[0],
                    settings.n_eval)
    outputs = complete_greedy(model, [p for p, _ in graphs], max_new_tokens=3 * (length + 1) + 4)
    return {f"degree {degree}, length {length}": [o == a for o, (_, a) in zip(outputs, graphs)]}


# settings field -> (report name, corpus preparation, per-problem scoring, corpus arguments)
TASKS = {
    "countdown": ("E6 countdown", prepare_countdown_corpus, countdown_outcomes,
                  lambda s: dict(difficulties=s.difficulties, max_number=s.max_number)),
    "pathstar": ("E7 path-star", prepare_pathstar_corpus, pathstar_outcomes,
                 lambda s: dict(settings=((s.star_degree, s.star_length),), n_labels=s.star_labels)),
}


def training_flops(cfg: RunConfig, steps: int) -> float:
    tokens = steps * cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size
    return training_flops_per_token(cfg.model, cfg.train.model) * tokens


def equal_compute_checkpoint(run_dir: Path, cfg: RunConfig, budget_flops: float) -> Path:
    """The kept checkpoint of `run_dir` with the most training FLOPs not above `budget_flops`."""
    kept = [c for c in list_checkpoints(run_dir) if training_flops(cfg, checkpoint_step(c)) <= budget_flops * 1.0001]
    return (kept or list_checkpoints(run_dir)[:1])[-1]


def run_tasks(settings: TaskSettings, configs_for: ConfigsFor, baseline: str, workers: int, out_dir: Path,
              device: str) -> dict:
    """Prepare, train and score every task; returns per task {"pass_at_1", "correct", "equal_compute", ...}."""
    results = {}
    train_overrides = {"max_steps": settings.max_steps, "keep_every": settings.keep_every,
                       "ckpt_interval": settings.keep_every, "eval_interval": settings.keep_every,
                       "warmup_steps": min(100, settings.max_steps // 10)}
    for field_name, (name, prepare_corpus, outcomes, corpus_args) in TASKS.items():
        if not getattr(settings, field_name):
            continue
        task_dir = out_dir / field_name
        data_dir = task_dir / "data"
        if not (data_dir / "manifest.json").is_file():
            prepare_corpus(data_dir, n_docs=settings.documents, seed=settings.seed, tokenizer=settings.tokenizer,
                           **corpus_args(settings))
        configs = configs_for(data_dir, task_dir / "runs", train_overrides, {"block_size": settings.block_size})
        configs = {arm: by_seed for arm, by_seed in configs.items() if not settings.arms or arm in settings.arms}
        train_all([cfg for by_seed in configs.values() for cfg in by_seed.values()], workers)
        results[name] = score_arms(configs, baseline, outcomes, settings, device, task_dir / "outcomes")
    return results


def _outcomes_of(ckpt: Path, outcomes, settings: TaskSettings, device: str, cache: Path) -> dict[str, list[bool]]:
    """Per-problem outcomes of one checkpoint, cached (a later call, e.g. after an interruption, reads them)."""
    path = cache / f"{ckpt.parent.parent.parent.name}-{ckpt.parent.parent.name}-{ckpt.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = outcomes(load_model(ckpt, device), settings)
    atomic_write(path, json.dumps(result))
    return result


def score_arms(configs: Mapping[str, Mapping[int, RunConfig]], baseline: str, outcomes, settings: TaskSettings,
               device: str, cache: Path) -> dict:
    base_cfg = next(iter(configs[baseline].values()))
    base_flops = training_flops(base_cfg, base_cfg.train.max_steps)
    result = {"n_eval": settings.n_eval, "max_steps": settings.max_steps, "pass_at_1": {}, "correct": {},
              "equal_compute": {}}
    for arm, by_seed in configs.items():
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
