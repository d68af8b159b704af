"""Trainer: exact resume after SIGKILL, signals, NaN detection, DDP equivalence, clear errors."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import run_cli, run_config
from futuretoken.config import ConfigError, RunConfig
from futuretoken.data import prepare
from futuretoken.train import CheckpointError, Trainer, TrainingError, list_checkpoints, load_model, train


def train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


KILL_SCRIPT = """
import os, signal, sys
from futuretoken.config import RunConfig
from futuretoken.train import Trainer
cfg = RunConfig.load(sys.argv[1], sys.argv[3:])
def die(step, loss):
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)  # no chance to save: like a machine dying
Trainer(cfg, resume=True).fit(on_step=die)
"""


def write_toml(cfg: RunConfig, path: Path) -> Path:
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("model", ["ftp", "gpt"])
def test_sigkill_then_resume_reproduces_losses_exactly(data_dir, tmp_path, model):
    config = write_toml(run_config(data_dir, tmp_path / "x", model), tmp_path / "run.toml")
    straight = run_cli("train", "--config", str(config), f"train.out_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    killed = subprocess.run([sys.executable, str(script), str(config), "7", f"train.out_dir={tmp_path / 'killed'}"],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert [p.name for p in list_checkpoints(tmp_path / "killed")] == ["step-0000004"]
    resumed = run_cli("train", "--config", str(config), "--resume", f"train.out_dir={tmp_path / 'killed'}")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout
    a, b = train_losses(tmp_path / "straight"), train_losses(tmp_path / "killed")
    assert sorted(a) == sorted(b) == list(range(1, 13))
    assert a == b  # bit-for-bit: same data order, optimizer state and RNG
    wa = load_model(tmp_path / "straight").state_dict()
    wb = load_model(tmp_path / "killed").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_saves_a_checkpoint_and_resume_finishes(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run", ckpt_interval=100))
    result = trainer.fit(on_step=lambda step, loss: step == 5 and os.kill(os.getpid(), signal.SIGTERM))
    assert result.interrupted and result.step == 5
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000005"]
    result = train(run_config(data_dir, tmp_path / "run", ckpt_interval=100), resume=True)
    assert result.step == 12 and len(result.losses) == 7


def test_non_finite_loss_stops_with_last_good_checkpoint(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run"))
    forward = trainer.forward

    def poisoned(tokens):
        total, per_k = forward(tokens)
        return (total * float("nan"), per_k) if trainer.step == 4 else (total, per_k)

    trainer.forward = poisoned
    last_good = {}

    def remember_weights(step, loss):
        last_good.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    with pytest.raises(TrainingError, match=r"loss is nan at step 5.*step-0000004"):
        trainer.fit(on_step=remember_weights)
    after = trainer.model.state_dict()
    assert all(torch.equal(last_good[k], after[k]) for k in after)  # the bad update was not applied


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_process(data_dir, tmp_path, parallel):
    config = write_toml(run_config(data_dir, tmp_path / "x", max_steps=6), tmp_path / "run.toml")
    single = run_cli("train", "--config", str(config), "train.batch_size=8", "model.dropout=0.0", f"train.out_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "futuretoken.cli", "train", "--config", str(config), "train.batch_size=4", "model.dropout=0.0",
         f"train.parallel={parallel}",
         f"train.out_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, env=env, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(a) == sorted(b)
    for step in a:  # same global batch; only the reduction order differs
        assert abs(a[step] - b[step]) < 1e-4 * max(1.0, abs(a[step])), (step, a[step], b[step])
    assert load_model(tmp_path / "two").num_parameters() == load_model(tmp_path / "one").num_parameters()


def test_existing_run_needs_resume(data_dir, tmp_path):
    train(run_config(data_dir, tmp_path / "run", max_steps=4))
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(run_config(data_dir, tmp_path / "run", max_steps=4))


def test_resume_refuses_another_model_type_or_shape(data_dir, tmp_path):
    train(run_config(data_dir, tmp_path / "run", model="gpt", max_steps=4))
    with pytest.raises(CheckpointError, match="holds a 'gpt' model"):
        Trainer(run_config(data_dir, tmp_path / "run", model="ftp"), resume=True)
    other = run_config(data_dir, tmp_path / "run", model="gpt")
    other.model.n_embd = 64
    with pytest.raises(CheckpointError, match="different model config"):
        Trainer(other, resume=True)


def test_resume_refuses_another_vocabulary(data_dir, tmp_path):
    train(run_config(data_dir, tmp_path / "run", model="gpt", max_steps=4))
    other_data = tmp_path / "other"
    prepare(corpus=str(data_dir.parent / "*.txt"), tokenizer="bpe:280", out_dir=other_data, val_fraction=0.1)
    with pytest.raises(CheckpointError, match="vocab_size"):
        Trainer(run_config(other_data, tmp_path / "run", model="gpt"), resume=True)


def test_cli_errors_are_clear(tmp_path):
    bad = run_cli("train", "train.lrr=1")
    assert bad.returncode == 2 and "unknown" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_cli("train", "--config", str(tmp_path / "none.toml"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_keep_last_and_keep_every_decide_which_checkpoints_stay(data_dir, tmp_path):
    train(run_config(data_dir, tmp_path / "run", ckpt_interval=2, keep_last=1, keep_every=4, max_steps=10))
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000004", "step-0000008", "step-0000010"]
