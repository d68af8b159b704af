"""Smoke tests: every shipped config and benchmark script still works with the current code.

Files are discovered by glob, so a new config or benchmark is covered as soon as it is added:
- every configs/*.toml parses as a run config (RunConfig.load) and builds every model type at full
  size on the meta device (no memory), then trains one real optimizer step on the CPU, shrunk only
  where one step would be slow: the model's layers, widths, heads, horizon and decoder are the
  config's; the data are the tests' `data_dir` corpus (whose vocabulary and end-of-text token the
  trainer takes, as it always does from the data); batch_size 1, block_size <= 64, grad_accum <= 2,
  no torch.compile (CPU compilation takes minutes);
- every configs/experiments/*.toml parses (Study.load) and builds every arm's model, and every
  task arm's at the task block size, on the meta device;
- every benchmarks/*.py runs as a script with its smallest arguments (BENCHMARK_ARGS says which; a
  new script without an entry there fails until it gets one).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from futuretoken.config import MODEL_TYPES, RunConfig
from futuretoken.model import MODELS
from futuretoken.study import Study
from futuretoken.training import Trainer
from futuretoken.training.objective import summarise

ROOT = Path(__file__).parent.parent
RUN_CONFIGS = sorted(ROOT.glob("configs/*.toml"))
EXPERIMENTS = sorted(ROOT.glob("configs/experiments/*.toml"))
BENCHMARKS = sorted(ROOT.glob("benchmarks/*.py"))


def names(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(ROOT)) for p in paths]


def build_on_meta(cfg, model_type: str):
    with torch.device("meta"):
        model = MODELS[model_type](cfg)
    params = list(model.parameters())
    assert params and all(p.device.type == "meta" for p in params)
    return model


def test_the_globs_find_the_shipped_files():
    assert {"tiny.toml", "small.toml", "gpt2-124m.toml"} <= {p.name for p in RUN_CONFIGS}
    assert {"cpu.toml", "gpu.toml"} <= {p.name for p in EXPERIMENTS}
    assert {"decoder_fraction.py", "task_pilot.py"} <= {p.name for p in BENCHMARKS}


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=names(RUN_CONFIGS))
def test_run_config_builds_every_model_type_on_meta(path):
    cfg = RunConfig.load(path)
    assert cfg.train.model in MODEL_TYPES
    for model_type in MODEL_TYPES:  # `train.model=...` on the command line switches the type
        model = build_on_meta(cfg.model, model_type)
        assert model.config.n_layer == cfg.model.n_layer


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=names(RUN_CONFIGS))
def test_run_config_trains_one_step(path, data_dir, tmp_path):
    cfg = RunConfig.load(path)
    overrides = [f"data.dir={data_dir}", "data.corpus=none", "data.tokenizer=none", "data.val_fraction=none",
                 f"train.out_dir={tmp_path / 'run'}", "train.device=cpu", "train.compile=false",
                 "train.progress=false", "train.batch_size=1", f"train.grad_accum={min(cfg.train.grad_accum, 2)}",
                 f"model.block_size={min(cfg.model.block_size, 64)}",
                 # widths as configured, depth capped: the full depth is built on meta above, and
                 # initialising gpt2-124m's 12 layers would cost most of the suite's time for this test
                 f"model.n_layer={min(cfg.model.n_layer, 2)}"]
    cfg = RunConfig.load(path, overrides)
    trainer = Trainer(cfg)
    try:
        assert cfg.model.vocab_size == trainer.train_tokens.vocab_size  # the data decide the vocabulary
        before = [p.detach().clone() for p in trainer.model.parameters()]
        stats = trainer.train_step()
        loss = summarise(stats[:-2].tolist())["loss"]
        assert torch.isfinite(torch.tensor(loss)) and not stats[-2], f"{path.name}: step skipped, loss {loss}"
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters())), "no weight moved"
    finally:
        trainer.close()


@pytest.mark.parametrize("path", EXPERIMENTS, ids=names(EXPERIMENTS))
def test_experiment_builds_every_arm_on_meta(path, tmp_path):
    study = Study.load(path)
    assert study.settings.baseline in study.arms
    seed = study.settings.seeds[0]
    for arm in study.arms:
        cfg = study.run_config(arm, seed, tmp_path)
        build_on_meta(cfg.model, cfg.train.model)
    tasks = study.tasks
    if tasks is not None:
        assert set(tasks.arms) <= set(study.arms), f"[tasks] arms {tasks.arms} are not all arms"
        for arm in tasks.arms or study.arms:
            cfg = study.run_config(arm, seed, tmp_path, tmp_path / "task-data",
                                        model_overrides={"block_size": tasks.block_size})
            build_on_meta(cfg.model, cfg.train.model)


# A tiny experiment for benchmarks/task_pilot.py: its [tasks] corpus and held-out problems kept small.
PILOT_EXPERIMENT = """
[model]
preset = "tiny"
n_layer = 1
n_embd = 32
n_head = 2
dec_head = 2

[data]
dir = "unused-by-the-pilot"

[train]
batch_size = 4
eval_batches = 1
progress = false

[arms.gpt]
train = { model = "gpt" }

[tasks]
documents = 200
block_size = 32
n_eval = 4
difficulties = [2]
star_labels = 10
tokenizer = "bpe:300"
"""


def decoder_fraction_args(data_dir: Path, tmp_path: Path) -> list[str]:
    return ["--data", str(data_dir), "--steps", "2", "--fractions", "0.5", "--eval-batches", "1",
            "--min-windows", "2", "--out", str(tmp_path / "runs"), "--json", str(tmp_path / "result.json")]


def task_pilot_args(data_dir: Path, tmp_path: Path) -> list[str]:
    config = tmp_path / "pilot.toml"
    config.write_text(PILOT_EXPERIMENT)
    return ["--config", str(config), "--task", "countdown", "--steps", "2", "--work", str(tmp_path / "work"),
            "--out", str(tmp_path / "result.json")]


BENCHMARK_ARGS = {"decoder_fraction.py": decoder_fraction_args, "task_pilot.py": task_pilot_args}


@pytest.mark.parametrize("path", BENCHMARKS, ids=names(BENCHMARKS))
def test_benchmark_runs(path, data_dir, tmp_path):
    assert path.name in BENCHMARK_ARGS, (
        f"{path.name} has no smoke arguments: add the smallest arguments it runs with to BENCHMARK_ARGS "
        "in tests/test_smoke.py")
    args = BENCHMARK_ARGS[path.name](data_dir, tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(path), *args], cwd=tmp_path, capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert (tmp_path / "result.json").is_file(), f"{path.name} wrote no result"
