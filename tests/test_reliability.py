"""Faults and hostile inputs: random kills, corrupt checkpoints and shards, failed writes,
pickles that try to run code, and property-based checks that bad input gives clear errors."""

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import futuretoken as ft
from conftest import run_config
from futuretoken.checkpoint import CheckpointError, list_checkpoints, load_model, load_trainer_state
from futuretoken.config import ConfigError, RunConfig
from futuretoken.data import DataError
from futuretoken.infer import SamplingConfig
from futuretoken.train import Trainer, TrainingError

KILL_AT = """
import os, signal, sys
from futuretoken.config import RunConfig
from futuretoken.train import Trainer
cfg = RunConfig.from_dict(__import__("json").loads(sys.argv[1]))
def die(step):
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
Trainer(cfg, resume=True).fit(on_step=die)
"""

RESUME = """
import sys, json
from futuretoken.config import RunConfig
from futuretoken.train import train
train(RunConfig.from_dict(json.loads(sys.argv[1])), resume=True)
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True, timeout=300)


def config_json(data_dir: Path, out_dir: Path) -> str:
    return json.dumps(run_config(data_dir, out_dir, "ftp", ckpt_interval=2, max_steps=10).to_dict())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(run_dir).state_dict()


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    done = python(RESUME, config_json(data_dir, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("kills", [[3], [5, 8], [2, 4, 9]])  # several kills per run, between checkpoints
def test_repeated_sigkill_then_resume_gives_the_same_final_weights(data_dir, straight, tmp_path, kills):
    out = tmp_path / "run"
    for step in kills:
        killed = python(KILL_AT, config_json(data_dir, out), str(step))
        assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = python(RESUME, config_json(data_dir, out))
    assert done.returncode == 0, done.stderr
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(data_dir, straight, tmp_path, damage):
    out = tmp_path / "run"
    python(KILL_AT, config_json(data_dir, out), "7")  # checkpoints at steps 2, 4, 6 (keep_last=2: 4 and 6)
    newest = list_checkpoints(out)[-1]
    assert newest.name == "step-0000006"
    target = newest / ("model.safetensors" if damage == "truncate" else "trainer.pt")
    data = bytearray(target.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="corrupt"):
        with pytest.raises(CheckpointError):
            load_model(newest)
        trainer = Trainer(RunConfig.from_dict(json.loads(config_json(data_dir, out))), resume=True)
    assert trainer.step == 4  # fell back to step-0000004
    trainer.close()
    done = python(RESUME, config_json(data_dir, out))
    assert done.returncode == 0 and "falling back" in done.stderr, done.stderr
    a, b = weights(straight), weights(out)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_failed_checkpoint_write_keeps_the_previous_one(data_dir, tmp_path, monkeypatch):
    from futuretoken import checkpoint as ckpt_module

    trainer = Trainer(run_config(data_dir, tmp_path / "run", ckpt_interval=2, max_steps=10))
    real_save = ckpt_module.save_file
    calls = {"n": 0}

    def disk_full_on_second_save(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(ckpt_module, "save_file", disk_full_on_second_save)
    with pytest.raises(TrainingError, match=r"No space left on device.*previous checkpoint is intact.*step-0000002"):
        trainer.fit()
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-0000002"]  # no half-written or temporary folder
    load_model(root / "step-0000002")  # and it still loads: checksums match


def test_corrupted_shard_is_detected_by_its_manifest_hash(data_dir, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    shard = copy / "train_000.bin"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match="train_000.bin"):
        Trainer(run_config(copy, tmp_path / "run"))


def test_trainer_state_never_unpickles_code(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tmp_path / "trainer.pt").write_bytes(pickle.dumps({"optimizer": Exploit()}))
    with pytest.raises(pickle.UnpicklingError):
        load_trainer_state(tmp_path)
    assert not marker.exists()


def test_checkpoints_of_another_format_or_model_are_refused(trained_runs, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(list_checkpoints(trained_runs / "ftp")[-1], ckpt)
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(CheckpointError, match="format 99"):
        load_model(ckpt)
    (ckpt / "meta.json").write_text(json.dumps({**meta, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match="model type 'bert'"):
        load_model(ckpt)


# --- configs refuse what would break training -------------------------------------------------------
@pytest.mark.parametrize("override,message", [
    ("train.lr=inf", "train.lr=inf is not a valid float; give a finite number"),
    ("train.grad_clip=nan", "train.grad_clip=nan is not a valid float"),
    ("train.min_lr=-inf", "train.min_lr=-inf is not a valid float"),
    ("train.weight_decay=-0.1", "train.weight_decay=-0.1 must be >= 0"),
    ("train.beta2=1.0", "beta2=1.0: each must be in [0, 1)"),
    ("model.n_layer=true", "model.n_layer=True is not a valid int"),
    ("train.max_steps=1e400", "train.max_steps=inf is not a valid int"),
    ("model.bias=1", "model.bias=1 is not a valid bool; give true or false"),
    ("data.val_fraction=nan", "data.val_fraction=nan is not a valid float"),
])
def test_config_values_that_would_break_training_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.load(None, [override])


def test_configs_built_in_python_get_the_same_checks():
    for make in (lambda: ft.TrainConfig(lr=float("inf")), lambda: ft.TrainConfig(batch_size=True),
                 lambda: ft.DataConfig(val_fraction=float("nan")), lambda: ft.ModelConfig(n_layer=2.5)):
        with pytest.raises(ConfigError):
            make()


# --- property-based: every bad input is a clear error, never a crash ---------------------------------

MODEL_FIELDS = st.fixed_dictionaries({}, optional={
    "vocab_size": st.integers(-5, 70000), "n_embd": st.integers(-4, 256), "n_head": st.integers(-2, 20),
    "horizon": st.integers(-2, 12), "gamma": st.floats(-1, 2) | st.just(float("nan")), "pseudo_len": st.integers(-2, 16),
    "dec_layer": st.integers(-2, 4), "dec_head": st.integers(-2, 20), "dropout": st.floats(-1, 2),
    "decoder_fraction": st.floats(-1, 2), "eot_token": st.none() | st.integers(-3, 70000),
})


@settings(max_examples=200, deadline=None)
@given(MODEL_FIELDS)
def test_model_config_is_valid_or_a_config_error(fields):
    try:
        cfg = ft.ModelConfig(**fields)
    except ConfigError as err:
        assert str(err)
        return
    assert cfg.n_embd % cfg.n_head == 0 and 0 < cfg.gamma <= 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=4))
def test_config_overrides_are_valid_or_a_config_error(overrides):
    try:
        RunConfig.load(None, overrides)
    except ConfigError as err:
        assert str(err)


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers(-5, 5),
       st.none() | st.integers(-5, 100), st.none() | st.floats(allow_nan=True, allow_infinity=True))
def test_sampling_parameters_are_valid_or_a_value_error(temperature, top_k, top_p):
    try:
        SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    except ValueError as err:
        assert str(err)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(["--temperature", "--top-k", "--top-p", "--max-new-tokens", "--strategy",
                                 "--draft-len", "-1", "0", "0.5", "2", "1e9", "nan", "ar", "speculative", "x"]),
                max_size=6))
def test_generate_cli_never_shows_a_traceback(trained_runs, argv, capsys):
    from futuretoken.cli import main

    try:  # in-process: an uncaught exception fails the test, a clear error exits 2
        main(["generate", str(trained_runs / "ftp"), "alpha beta", *argv])
    except SystemExit as exit_:
        assert exit_.code == 2
        assert "error" in capsys.readouterr().err
