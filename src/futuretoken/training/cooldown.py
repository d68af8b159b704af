"""Cooldowns: anneal a warmup-stable-decay run from one of its stable checkpoints.

A WSD run's learning rate is constant between warm-up and its final decay, and its data order
and RNG are fixed by the step, so the run "as if it had been `step + decay_steps` steps long"
is the run itself up to `step` followed by one decay. `cooldown_branch` makes that run as a
folder of its own (RUN/cooldowns/step-S/): the parent's checkpoint at S, a config whose
max_steps is S + decay_steps, and the parent's metrics up to S; `train(cfg, resume=True)`
then trains the decay. Its end is annealed like the parent's end, so checkpoints of different
lengths can be compared at the same point of their schedules (study/compare.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..checkpoint import (
    RUN_RECORD,
    CheckpointError,
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    read_run_record,
)
from ..config import RunConfig
from ..data.tokenizer import TOKENIZER_FILE
from ..storage import atomic_write
from .optim import decay_steps
from .run_folder import METRICS, RunFolder

COOLDOWNS = "cooldowns"


def cooldown_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / COOLDOWNS / checkpoint_name(step)


def stable_steps(run_dir: str | Path) -> list[int]:
    """The kept checkpoints of a WSD run that a cooldown can start from: after warm-up, before the decay."""
    cfg = run_config(run_dir)
    last_stable = cfg.train.max_steps - decay_steps(cfg.train)
    return [s for s in map(checkpoint_step, list_checkpoints(run_dir)) if cfg.train.warmup_steps <= s <= last_stable]


def run_config(run_dir: str | Path) -> RunConfig:
    record = read_run_record(run_dir)
    return RunConfig.from_dict({k: record[k] for k in ("model", "data", "train")})


def cooldown_branch(run_dir: str | Path, step: int) -> RunConfig:
    """The config of the cooldown of `run_dir` from its stable checkpoint `step`, its folder made ready
    (idempotent: an existing branch is kept, so an interrupted cooldown resumes)."""
    run_dir = Path(run_dir)
    parent = run_config(run_dir)
    if parent.train.schedule != "wsd":
        raise ValueError(f"{run_dir} was trained with schedule={parent.train.schedule!r}: only a warmup-stable-decay "
                         "run (train.schedule = 'wsd') has stable checkpoints to cool down from")
    if step not in stable_steps(run_dir):
        raise ValueError(f"{run_dir} has no stable checkpoint at step {step}; its stable ones are "
                         f"{stable_steps(run_dir)} (keep more with train.keep_every)")
    out = cooldown_dir(run_dir, step)
    values = parent.to_dict()
    values["train"].update(max_steps=step + decay_steps(parent.train), decay_steps=decay_steps(parent.train),
                           out_dir=str(out))
    cfg = RunConfig.from_dict(values)
    if (out / RUN_RECORD).is_file():
        return cfg
    ckpt = run_dir / "checkpoints" / checkpoint_name(step)
    if not ckpt.is_dir():
        raise CheckpointError(f"{ckpt} is gone: the cooldown needs the parent's checkpoint at step {step}")
    staging = out.with_name(out.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "checkpoints").mkdir(parents=True)
    shutil.copytree(ckpt, staging / "checkpoints" / ckpt.name)  # verified by its hashes when training resumes
    shutil.copy2(run_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    shutil.copy2(run_dir / METRICS, staging / METRICS)
    RunFolder(staging).forget_after(step)  # the parent's metrics up to the branch point, as a resume keeps them
    record = {**read_run_record(run_dir), **cfg.to_dict(), "cooldown_of": {"run": str(run_dir), "step": step}}
    atomic_write(staging / RUN_RECORD, json.dumps(record, indent=2))
    staging.rename(out)  # complete or absent
    return cfg
