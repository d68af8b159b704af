"""Faults and hostile inputs: random kills, corrupt checkpoints and shards, failed writes,
pickles that try to run code, and property-based checks that bad input gives clear errors."""

import contextlib
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
from hypothesis import given, settings
from hypothesis import strategies as st

import futuretoken as ft
from conftest import disk_full_after, run_config
from futuretoken.checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_model,
    load_trainer_state,
    read_metrics,
)
from futuretoken.config import ConfigError, RunConfig
from futuretoken.data import DataError, prepare
from futuretoken.infer import SamplingConfig
from futuretoken.storage import sha256_file
from futuretoken.training import Trainer, TrainingError, train

KILL_AT = """
import os, signal, sys
from futuretoken.config import RunConfig
from futuretoken.training import Trainer
cfg = RunConfig.from_dict(__import__("json").loads(sys.argv[1]))
def die(step):
    if step == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)
Trainer(cfg, resume=True).fit(on_step=die)
"""

RESUME = """
import sys, json
from futuretoken.config import RunConfig
from futuretoken.training import train
train(RunConfig.from_dict(json.loads(sys.argv[1])), resume=True)
"""

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def python(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True, timeout=300)


def config_json(data_dir: Path, out_dir: Path) -> str:
    return json.dumps(run_config(data_dir, out_dir, "ftp", ckpt_interval=2, max_steps=10).to_dict())


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_model(run_dir).state_dict()


def exploit(marker: Path):
    """An object whose unpickling runs a shell command that creates `marker`."""

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    return Exploit()


def copy_checkpoint(run: Path, to: Path) -> Path:
    shutil.copytree(list_checkpoints(run)[-1], to)
    return to


def rewrite_meta(ckpt: Path, **changes) -> None:
    meta = json.loads((ckpt / "meta.json").read_text())
    (ckpt / "meta.json").write_text(json.dumps({**meta, **changes}))


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("straight") / "run"
    done = python(RESUME, config_json(data_dir, out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.parametrize("kills", [[2, 4, 9]])  # several kills per run, between checkpoints (one: test_train)
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


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run", ckpt_interval=2, max_steps=10))
    with contextlib.ExitStack() as full:
        with pytest.raises(TrainingError, match=r"File too large.*previous checkpoint is intact.*step-0000002.*"
                                                r"free disk space.*--resume"):
            trainer.fit(on_step=lambda step: step == 4 and full.enter_context(disk_full_after(4096)))
    trainer.close()
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
    (tmp_path / "trainer.pt").write_bytes(pickle.dumps({"optimizer": exploit(marker)}))
    with pytest.raises(CheckpointError, match=r"trainer\.pt cannot be read .*never unpickles code") as err:
        load_trainer_state(tmp_path)
    assert "weights_only=False" not in str(err.value)
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


# --- one training per run folder -------------------------------------------------------------------
def test_a_second_training_in_the_same_run_folder_is_refused(data_dir, tmp_path):
    run = tmp_path / "run"
    first = Trainer(run_config(data_dir, run, max_steps=4))
    with pytest.raises(TrainingError, match=rf"{run} is in use by another training \(process {os.getpid()}\)"):
        Trainer(run_config(data_dir, run, max_steps=4), resume=True)
    first.fit()
    first.close()
    with pytest.raises(ConfigError, match="--resume"):  # a start that fails releases the folder too
        Trainer(run_config(data_dir, run, max_steps=4))
    Trainer(run_config(data_dir, run, max_steps=4), resume=True).close()


def test_leftovers_of_a_killed_run_are_removed_when_it_resumes(data_dir, tmp_path):
    run = tmp_path / "run"
    train(run_config(data_dir, run, max_steps=4))
    half_saved, half_logged = run / "checkpoints" / ".step-0000006.tmp", run / ".metrics.jsonl.x1y2.tmp"
    half_saved.mkdir()
    (half_saved / "trainer.pt").write_bytes(b"half")
    half_logged.write_text("half")
    Trainer(run_config(data_dir, run, max_steps=8), resume=True).close()
    assert not half_saved.exists() and not half_logged.exists()


# --- resume only on the data the run was trained on ------------------------------------------------
def test_resume_refuses_a_data_folder_prepared_again(data_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    train(run_config(data, tmp_path / "run", max_steps=4))
    before = json.loads((data / "manifest.json").read_text())
    prepare(corpus=before["corpus"], tokenizer="bpe:300", out_dir=data, val_fraction=0.1, seed=1)  # another split
    assert json.loads((data / "manifest.json").read_text())["vocab_size"] == before["vocab_size"]
    with pytest.raises(CheckpointError, match=r"trained on other data than .*data holds now.*another train.out_dir"):
        Trainer(run_config(data, tmp_path / "run", max_steps=8), resume=True)


# --- meta.json is checked before it is trusted -----------------------------------------------------
META_DAMAGE = {
    "truncated": lambda ckpt: (ckpt / "meta.json").write_text((ckpt / "meta.json").read_text()[:100]),
    "not an object": lambda ckpt: (ckpt / "meta.json").write_text("[]"),
    "files pinned: none": lambda ckpt: rewrite_meta(ckpt, files={}),
    "files not a map": lambda ckpt: rewrite_meta(ckpt, files="model.safetensors"),
    "a pinned path outside": lambda ckpt: rewrite_meta(ckpt, files={**json.loads(
        (ckpt / "meta.json").read_text())["files"], "../../run.json": "0" * 64}),
    "an unpinned file": lambda ckpt: (ckpt / "extra.pt").write_bytes(b"unverified"),
    "no step": lambda ckpt: rewrite_meta(ckpt, step=None),
    "a layout that is a list": lambda ckpt: rewrite_meta(ckpt, layout=["full"]),
    "config and weights disagree": lambda ckpt: rewrite_meta(ckpt, model_config={**json.loads(
        (ckpt / "meta.json").read_text())["model_config"], "n_embd": 64}),
}


@pytest.mark.parametrize("damage", META_DAMAGE)
def test_a_malformed_meta_json_falls_back_to_the_previous_checkpoint(straight, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    newest = list_checkpoints(run)[-1]
    META_DAMAGE[damage](newest)
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        assert latest_valid_checkpoint(run).name == "step-0000008"
        load_model(run)
    with pytest.raises(CheckpointError):
        load_model(newest)


@pytest.mark.parametrize("field,value,message", [
    ("dec_layer", 5000, "dec_layer=5000 is above 1024"),  # would build 5000 decoder layers
    ("vocab_size", 4_000_000, "the weights do not match the model config"),  # a 4M x d embedding
    ("n_layer", True, r"model.n_layer=True is not a valid int"),
])
def test_a_tampered_model_config_is_refused_before_a_model_is_built(trained_runs, tmp_path, field, value, message):
    ckpt = copy_checkpoint(trained_runs / "ftp", tmp_path / "ckpt")
    rewrite_meta(ckpt, model_config={**json.loads((ckpt / "meta.json").read_text())["model_config"], field: value})
    with pytest.raises(CheckpointError, match=message):
        load_model(ckpt)


@pytest.mark.parametrize("kind,field,value,message", [
    *[(kind, "horizon", 9, "the weights do not match the model config") for kind in ("mtp", "mtp_seq")],
    *[(kind, "mtp_lambda", float("nan"), "model.mtp_lambda=nan is not a valid float") for kind in ("mtp", "mtp_seq")],
    ("mtp", "mtp_backward", "both", "mtp_backward='both' is unknown"),  # MTP-seq never reads mtp_backward
    ("mtp_seq", "mtp_lambda", -1.0, "mtp_lambda=-1.0 must be >= 0"),  # MTP never reads mtp_lambda
])
def test_a_tampered_multi_token_config_is_refused(trained_runs, tmp_path, kind, field, value, message):
    ckpt = copy_checkpoint(trained_runs / kind, tmp_path / "ckpt")
    rewrite_meta(ckpt, model_config={**json.loads((ckpt / "meta.json").read_text())["model_config"], field: value})
    with pytest.raises(CheckpointError, match=message):
        load_model(ckpt)
    assert load_model(trained_runs / kind).model_type == kind  # the untampered run loads


def test_a_tampered_safetensors_header_is_a_checkpoint_error(trained_runs, tmp_path):
    ckpt = copy_checkpoint(trained_runs / "ftp", tmp_path / "ckpt")
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:10] = b"[["  # the JSON header starts at byte 8
    weights.write_bytes(bytes(data))
    rewrite_meta(ckpt, files={**json.loads((ckpt / "meta.json").read_text())["files"],
                              "model.safetensors": sha256_file(weights)})  # hashes re-pinned: only the header is wrong
    with pytest.raises(CheckpointError, match="the weights' header cannot be read"):
        load_model(ckpt)


def test_a_sharded_checkpoint_never_unpickles_code(trained_runs, tmp_path):
    """torch.distributed.checkpoint stores its metadata as a pickle: it is read with an unpickler
    that builds only dcp's own classes before dcp ever opens it."""
    ckpt = copy_checkpoint(trained_runs / "ftp", tmp_path / "run" / "checkpoints" / "step-0000008")
    marker = tmp_path / "pwned"
    (ckpt / "model.safetensors").unlink()
    (ckpt / "dcp").mkdir()
    (ckpt / "dcp" / ".metadata").write_bytes(pickle.dumps(exploit(marker)))
    rewrite_meta(ckpt, layout="sharded", files={n: sha256_file(ckpt / n) for n in ("trainer.pt", "dcp/.metadata")})
    with pytest.raises(CheckpointError, match="posix.system is not allowed in checkpoint metadata"):
        load_model(ckpt)
    assert not marker.exists()


# --- nothing non-finite is accepted or saved -------------------------------------------------------
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
    ("model.mtp_lambda=inf", "model.mtp_lambda=inf is not a valid float"),
    ("model.mtp_lambda=-1 train.model=mtp_seq", "mtp_lambda=-1.0 must be >= 0"),  # checked where it is used
    ("model.mtp_backward=true train.model=mtp", "mtp_backward='True' is unknown"),
    ("train.model=mtp3", "train.model='mtp3' is unknown; choose one of gpt, ftp, mtp, mtp_seq"),
])
def test_config_values_that_would_break_training_are_refused(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunConfig.load(None, override.split())


def test_configs_built_in_python_get_the_same_checks():
    for make in (lambda: ft.TrainConfig(lr=float("inf")), lambda: ft.TrainConfig(batch_size=True),
                 lambda: ft.DataConfig(val_fraction=float("nan")), lambda: ft.ModelConfig(n_layer=2.5)):
        with pytest.raises(ConfigError):
            make()


def test_weights_that_are_not_finite_are_never_checkpointed(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run", ckpt_interval=1))

    def overflow(step):
        if step == 2:  # e.g. an update too large for float32
            next(trainer.model.parameters()).data[0] = float("inf")

    with pytest.raises(TrainingError, match=r"weights are not finite at step 2.*Last good checkpoint: .*step-0000001"):
        trainer.fit(on_step=overflow)
    trainer.close()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000001"]


# --- a damaged metrics.jsonl does not block --resume -----------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "delete"])
def test_resume_survives_a_truncated_or_missing_metrics_file(data_dir, tmp_path, damage):
    run = tmp_path / "run"
    train(run_config(data_dir, run, max_steps=4))
    metrics = run / "metrics.jsonl"
    if damage == "truncate":  # the last record cut short, as by a kill mid-write
        metrics.write_bytes(metrics.read_bytes()[:-20])
    else:
        metrics.unlink()
    with pytest.warns(UserWarning, match="unreadable") if damage == "truncate" else contextlib.nullcontext():
        assert train(run_config(data_dir, run, max_steps=6), resume=True).step == 6
    steps = [r["step"] for r in read_metrics(run) if r["split"] == "train"]
    assert steps == ([1, 2, 3, 4] if damage == "truncate" else []) + [5, 6]


# --- property-based: every bad input is a clear error, never a crash ---------------------------------

MODEL_FIELDS = st.fixed_dictionaries({}, optional={
    "vocab_size": st.integers(-5, 70000), "n_embd": st.integers(-4, 256), "n_head": st.integers(-2, 20),
    "horizon": st.integers(-2, 12), "gamma": st.floats(-1, 2) | st.just(float("nan")), "pseudo_len": st.integers(-2, 16),
    "dec_layer": st.integers(-2, 4), "dec_head": st.integers(-2, 20), "dropout": st.floats(-1, 2),
    "decoder_fraction": st.floats(-1, 2), "eot_token": st.none() | st.integers(-3, 70000),
    "mtp_lambda": st.floats(-1, 2) | st.just(float("inf")), "mtp_backward": st.sampled_from(["sequential", "joint", "x"]),
})


@settings(max_examples=200, deadline=None)
@given(MODEL_FIELDS)
def test_model_config_is_valid_or_a_config_error(fields):
    try:
        cfg = ft.ModelConfig(**fields)
        for model_type in ft.MODELS:  # each type's own fields (GPT: none beyond the encoder's)
            cfg.validate_for(model_type)
    except ConfigError as err:
        assert str(err)
        return
    assert cfg.n_embd % cfg.n_head == 0 and 0 < cfg.gamma <= 1
    assert 0 <= cfg.mtp_lambda < float("inf") and cfg.mtp_backward in ("sequential", "joint")


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
