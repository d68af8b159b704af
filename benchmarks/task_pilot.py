"""Pilot for the toy tasks' budget: how many steps until the baseline (GPT) is off the floor?

Trains one GPT on a task's generated stream with the experiment file's settings and scores every
kept checkpoint on the held-out problems, so the [tasks] budget of an experiment can be sized
(the validity gate asks for pass@1 >= task_floor at the easiest setting).

    python benchmarks/task_pilot.py --config configs/experiments/cpu.toml --task countdown --steps 1200
    python benchmarks/task_pilot.py --config configs/experiments/cpu.toml --task pathstar --steps 2000 \
        --out results/paper-cpu/pilot-pathstar.json
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from futuretoken.bench.env import environment
from futuretoken.checkpoint import checkpoint_step, list_checkpoints, load_model
from futuretoken.devices import resolve_device
from futuretoken.eval.registry import TASKS
from futuretoken.study import Study
from futuretoken.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", required=True)
    p.add_argument("--task", choices=[t.key for t in TASKS], required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--arm", default="gpt")
    p.add_argument("--work", default="runs/pilots", help="corpus and run folders")
    p.add_argument("--out", default=None, help="JSON results (default: WORK/pilot-TASK.json)")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    study = Study.load(a.config)
    settings = replace(study.tasks, max_steps=a.steps)
    task = next(t for t in TASKS if t.key == a.task)
    work = Path(a.work) / a.task
    data_dir = work / "data"
    if not (data_dir / "manifest.json").is_file():
        task.prepare_corpus(data_dir, n_docs=settings.documents, seed=settings.seed, tokenizer=settings.tokenizer,
                            **task.corpus_args(settings))
    cfg = study.run_config(a.arm, study.settings.seeds[0], work / "runs", data_dir,
                                {"max_steps": a.steps, "keep_every": settings.keep_every,
                                 "ckpt_interval": settings.keep_every, "eval_interval": settings.keep_every,
                                 "warmup_steps": min(100, a.steps // 10)}, {"block_size": settings.block_size})
    started = time.perf_counter()
    train(cfg, resume=True)
    seconds = time.perf_counter() - started
    device = resolve_device(a.device)
    curve = []
    for ckpt in list_checkpoints(cfg.train.out_dir):
        solved = task.outcomes(load_model(ckpt, device), settings)
        curve.append({"step": checkpoint_step(ckpt), **{k: sum(v) / len(v) for k, v in solved.items()}})
        print(curve[-1], flush=True)
    out = Path(a.out) if a.out else Path(a.work) / f"pilot-{a.task}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"pilot": task.name, "arm": a.arm, "config": a.config, "settings": asdict(settings),
                               "train_seconds": seconds, **environment(device), "pass_at_1": curve}, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
