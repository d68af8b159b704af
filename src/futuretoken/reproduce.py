"""`futuretoken reproduce --config configs/experiments/X.toml --out DIR`: the whole comparison.

1. Train FTP and GPT with the same [model], [data] and [train] settings (resumable:
   re-running continues or reuses finished runs).
2. `compare` them at matched next-token loss: E1-E5 -> DIR/paper/.
3. When [tasks] is present, E6 (countdown as code) and E7 (path-star planning): both
   models trained on the same generated stream with the same budget -> DIR/tasks/.
An experiment file is a run config (see configs/) plus [suite] (eval.paper.SuiteSettings)
and [tasks] (TaskSettings) tables.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig, build, read_toml
from .eval.paper import SuiteSettings, _verdict, compare
from .eval.report import markdown_table
from .files import writable_dir
from .train import train

MODELS = ("ftp", "gpt")


@dataclass
class TaskSettings:
    countdown: bool = True
    pathstar: bool = True
    documents: int = 20000  # generated training documents per task
    max_steps: int = 300  # training steps of each model on each task
    n_eval: int = 100  # evaluation problems per difficulty / setting
    difficulties: tuple[int, ...] = (2, 3, 4)  # countdown: how many numbers
    star_degree: int = 2  # path-star: arms
    star_length: int = 4  # path-star: nodes per arm
    tokenizer: str = "bpe:512"
    seed: int = 0


@dataclass
class Experiment:
    run: RunConfig  # shared by both models; train.model and train.out_dir are set per model
    suite: SuiteSettings
    tasks: TaskSettings | None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Experiment":
        values = dict(values)
        suite = values.pop("suite", {})
        tasks = values.pop("tasks", None)
        if "coherence_seeds" in suite:
            suite["coherence_seeds"] = tuple(suite["coherence_seeds"])
        if tasks is not None and "difficulties" in tasks:
            tasks["difficulties"] = tuple(tasks["difficulties"])
        return cls(run=RunConfig.from_dict(values), suite=build(SuiteSettings, suite, "suite"),
                   tasks=build(TaskSettings, tasks, "tasks") if tasks is not None else None)

    @classmethod
    def load(cls, path: str | Path) -> "Experiment":
        return cls.from_dict(read_toml(path))


def run_config_for(base: RunConfig, model: str, out_dir: Path, data_dir: Path | None = None,
                   max_steps: int | None = None) -> RunConfig:
    cfg = copy.deepcopy(base)
    cfg.train.model, cfg.train.out_dir = model, str(out_dir / model)
    if data_dir is not None:
        cfg.data.dir = str(data_dir)
    if max_steps is not None:
        cfg.train.max_steps = max_steps
        cfg.train.warmup_steps = min(cfg.train.warmup_steps, max_steps // 10)
        cfg.train.ckpt_interval = cfg.train.eval_interval = max(1, max_steps // 3)
        cfg.train.keep_every = 0
    return cfg


def train_pair(base: RunConfig, out_dir: Path, **kwargs) -> dict[str, Path]:
    for model in MODELS:
        train(run_config_for(base, model, out_dir, **kwargs), resume=True)
    return {m: out_dir / m for m in MODELS}


def _binomial_se(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def run_tasks(base: RunConfig, settings: TaskSettings, out_dir: Path) -> dict:
    """E6 and E7: prepare each generated corpus, train both models on it, score greedy pass@1."""
    from .eval.countdown import countdown_experiment, prepare_countdown_corpus
    from .eval.pathstar import pathstar_experiment, prepare_pathstar_corpus

    results: dict[str, dict] = {}
    device = base.train.device
    jobs = []
    if settings.countdown:
        jobs.append(("E6 countdown", prepare_countdown_corpus,
                     dict(difficulties=settings.difficulties),
                     lambda runs: {m: {f"{d} numbers": v for d, v in r.items()} for m, r in countdown_experiment(
                         runs, n_eval=settings.n_eval, difficulties=settings.difficulties, device=device).items()}))
    if settings.pathstar:
        star = (settings.star_degree, settings.star_length)
        jobs.append(("E7 path-star", prepare_pathstar_corpus, dict(settings=(star,)),
                     lambda runs: {m: {f"degree {s[0]}, length {s[1]}": v for s, v in r.items()}
                                   for m, r in pathstar_experiment(runs, settings=(star,), n_eval=settings.n_eval,
                                                                       device=device).items()}))
    for name, prepare_corpus, corpus_kwargs, evaluate in jobs:
        task_dir = out_dir / name.split()[1]
        data_dir = task_dir / "data"
        if not (data_dir / "manifest.json").is_file():
            prepare_corpus(data_dir, n_docs=settings.documents, seed=settings.seed, tokenizer=settings.tokenizer,
                           **corpus_kwargs)
        runs = train_pair(base, task_dir, data_dir=data_dir, max_steps=settings.max_steps)
        scores = evaluate(runs)
        rows = {}
        for setting in scores["ftp"]:
            f, g = scores["ftp"][setting], scores["gpt"][setting]
            se = math.hypot(_binomial_se(f, settings.n_eval), _binomial_se(g, settings.n_eval))
            rows[setting] = {"ftp": f, "gpt": g, "spread": se, "verdict": _verdict(f - g, se)}
        results[name] = {"n_eval": settings.n_eval, "results": rows}
    return results


def render_tasks(tasks: dict, settings: TaskSettings) -> str:
    rows = [[name, setting, r["ftp"], r["gpt"], 2 * r["spread"], r["verdict"]]
            for name, task in tasks.items() for setting, r in task["results"].items()]
    return "\n".join([
        "## Toy tasks: E6 code (countdown) and E7 planning (path-star)", "",
        f"Both models trained {settings.max_steps} steps on the same generated stream "
        f"({settings.documents} documents); greedy pass@1 on {settings.n_eval} held-out problems per setting; "
        "spread = binomial standard error; one training seed.", "",
        markdown_table(["task", "setting", "FTP pass@1", "GPT pass@1", "2 SE", "verdict"], rows), ""])


def reproduce(experiment: Experiment, out_dir: str | Path) -> Path:
    out_dir = writable_dir(out_dir, "--out folder")
    runs = train_pair(experiment.run, out_dir)
    report = compare(runs["ftp"], runs["gpt"], out_dir / "paper", experiment.suite, device=experiment.run.train.device)
    text = report.read_text()
    if experiment.tasks is not None:
        tasks = run_tasks(experiment.run, experiment.tasks, out_dir / "tasks")
        (out_dir / "tasks" / "results.json").write_text(
            json.dumps({"settings": asdict(experiment.tasks), **tasks}, indent=2))
        text += "\n" + render_tasks(tasks, experiment.tasks)
        report.write_text(text)
    return report
