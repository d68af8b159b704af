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
from futuretoken.checkpoint import CheckpointError, list_checkpoints, load_model, load_trainer_state
from futuretoken.config import ConfigError, RunConfig
from futuretoken.data import DataError, TokenShards, WindowSampler, prepare
from futuretoken.training import Trainer, TrainingError, train
from futuretoken.training.trainer import process_seed


def train_losses(run_dir: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["split"] == "train"}


KILL_SCRIPT = """
import os, signal, sys
from futuretoken.config import RunConfig
from futuretoken.training import Trainer
cfg = RunConfig.load(sys.argv[1], sys.argv[3:])
def die(step):
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


@pytest.mark.parametrize("model", ["ftp"])  # GPT runs the same loop; FTP adds the decoder and its RNG use
def test_sigkill_then_resume_reproduces_losses_exactly(data_dir, tmp_path, model, device):
    # CUDA kernels are only bit-reproducible with deterministic algorithms (train.deterministic).
    config = write_toml(run_config(data_dir, tmp_path / "x", model, device=device.type,
                                   deterministic=device.type == "cuda"), tmp_path / "run.toml")
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
    result = trainer.fit(on_step=lambda step: step == 5 and os.kill(os.getpid(), signal.SIGTERM))
    assert result.interrupted and result.step == 5
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000005"]
    trainer.close()  # releases the run folder for the next training
    result = train(run_config(data_dir, tmp_path / "run", ckpt_interval=100), resume=True)
    assert result.step == 12 and len(result.losses) == 7


def poison_step(trainer: Trainer, step: int) -> None:
    """Make the loss of `step` NaN (forward output and its statistics)."""
    forward = trainer.loss_module.forward

    def poisoned(tokens):
        total, stats = forward(tokens)
        if trainer.step + 1 == step:
            total, stats = total * float("nan"), stats * float("nan")
        return total, stats

    trainer.loss_module.forward = poisoned  # an instance attribute: nn.Module's __call__ runs it


def test_non_finite_loss_stops_with_last_good_checkpoint(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run"))  # log_interval 1: read back every step
    poison_step(trainer, 5)
    last_good = {}

    def remember_weights(step):
        last_good.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    with pytest.raises(TrainingError, match=r"loss is nan .*at step 5.*step-0000004"):
        trainer.fit(on_step=remember_weights)
    after = trainer.model.state_dict()
    assert all(torch.equal(last_good[k], after[k]) for k in after)  # the bad update was not applied


def test_non_finite_loss_is_skipped_on_the_device_and_reported_at_the_next_sync(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run", log_interval=4, eval_interval=100))
    poison_step(trainer, 5)
    reached = []
    with pytest.raises(TrainingError, match=r"at step 5.*skipped.*step-0000004"):
        trainer.fit(on_step=reached.append)
    assert reached[-1] == 8  # steps 6-8 ran before the read-back at step 8...
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())  # ...and no NaN reached a weight
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000004"]  # nothing saved after it


SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


def test_training_reads_the_device_once_per_log_interval(data_dir, tmp_path, monkeypatch):
    """On CPU a read-back costs nothing, so the calls that would wait for a GPU are counted."""
    trainer = Trainer(run_config(data_dir, tmp_path / "run", log_interval=5, eval_interval=100, ckpt_interval=100,
                                 max_steps=10))
    counts = {"train_step": 0, "read_back": 0}
    where = ["elsewhere"]
    for name in SYNCS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            if where[0] in counts:
                counts[where[0]] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    for method, key in (("train_step", "train_step"), ("_read_back", "read_back")):
        original = getattr(trainer, method)

        def tracked(*args, _original=original, _key=key, **kwargs):
            where[0] = _key
            try:
                return _original(*args, **kwargs)
            finally:
                where[0] = "elsewhere"

        setattr(trainer, method, tracked)
    trainer.fit()
    assert counts == {"train_step": 0, "read_back": 2}  # 10 steps, log_interval 5: two read-backs, one copy each


def trainer_gradients(cfg: RunConfig) -> tuple[list[dict[str, torch.Tensor]], list[float], Trainer]:
    """Every step's gradients (as the optimizer sees them) and losses of a run."""
    trainer = Trainer(cfg)
    grads = []
    trainer.optimizer.register_step_pre_hook(
        lambda *_: grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters()}))
    losses = trainer.fit().losses
    return grads, losses, trainer


def test_gradient_accumulation_equals_one_large_batch(eot_data_dir, tmp_path):
    """4 micro-batches of b rows == 1 batch of 4b rows, with many targets masked by end-of-text tokens
    (so micro-batches count different numbers of targets): the loss is normalised globally."""
    common = dict(dtype="float64", max_steps=3, eval_interval=100, ckpt_interval=100)
    whole = run_config(eot_data_dir, tmp_path / "whole", batch_size=8, **common)
    split = run_config(eot_data_dir, tmp_path / "split", batch_size=2, grad_accum=4, **common)
    for cfg in (whole, split):
        cfg.model.dropout = 0.0
    grads_a, losses_a, trainer = trainer_gradients(whole)
    grads_b, losses_b, _ = trainer_gradients(split)
    tokens = trainer.sampler.batch(0)
    assert (tokens == trainer.train_tokens.eot_token).float().mean() > 0.1  # the masks matter here
    assert len(grads_a) == len(grads_b) == 3
    for ga, gb in zip(grads_a, grads_b):
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-9, atol=1e-12, msg=name)
    assert losses_a == pytest.approx(losses_b, rel=1e-9)


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
                          capture_output=True, text=True, env=env, timeout=300)


# FSDP with accumulation covers FSDP without (its last micro-step is that case): one case per wrapper and model.
@pytest.mark.parametrize("parallel,accum,model", [("ddp", 1, "ftp"), ("fsdp", 2, "ftp"),
                                                  ("ddp", 1, "mtp"), ("fsdp", 2, "mtp"), ("fsdp", 1, "mtp_seq")])
def test_two_processes_match_one_process(eot_data_dir, tmp_path, parallel, accum, model):
    """With accum 2, FSDP reduces gradients only after the second micro-step: the result must not change.
    MTP's sequential head backward computes its heads' gradients inside the loss: DDP and FSDP must
    still reduce them."""
    config = write_toml(run_config(eot_data_dir, tmp_path / "x", model, max_steps=4, dtype="float64"),
                        tmp_path / "run.toml")
    common = ["--config", str(config), "model.dropout=0.0"]
    single = run_cli("train", *common, "train.batch_size=8", f"train.out_dir={tmp_path / 'one'}")
    assert single.returncode == 0, single.stderr
    two = torchrun("-m", "futuretoken.cli", "train", *common, f"train.batch_size={4 // accum}",
                   f"train.grad_accum={accum}", f"train.parallel={parallel}", f"train.out_dir={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = train_losses(tmp_path / "one"), train_losses(tmp_path / "two")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:  # same global batch, same normaliser: only the summation order differs
        assert a[step] == pytest.approx(b[step], rel=1e-9), (step, a[step], b[step])
    wa, wb = load_model(tmp_path / "one").state_dict(), load_model(tmp_path / "two").state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], rtol=1e-7, atol=1e-9, msg=name)


FSDP_KILL_SCRIPT = """
import os, signal, sys
from futuretoken.config import RunConfig
from futuretoken.training import Trainer
cfg = RunConfig.load(sys.argv[1], sys.argv[3:])
def die(step):
    if step == int(sys.argv[2]) and os.environ["RANK"] == "0":
        os.kill(os.getpid(), signal.SIGKILL)  # torchrun then stops the other process
Trainer(cfg, resume=True).fit(on_step=die)
"""


def test_fsdp_sharded_checkpoints_resume_exactly_after_sigkill(data_dir, tmp_path):
    """FSDP writes sharded checkpoints (torch.distributed.checkpoint) with the same guarantees as full
    ones; dropout is on, so every process's own random stream must be saved and restored."""
    config = write_toml(run_config(data_dir, tmp_path / "x", max_steps=8), tmp_path / "run.toml")
    straight = torchrun("-m", "futuretoken.cli", "train", "--config", str(config), "train.parallel=fsdp",
                        f"train.out_dir={tmp_path / 'straight'}")
    assert straight.returncode == 0, straight.stderr[-3000:]
    script = tmp_path / "kill.py"
    script.write_text(FSDP_KILL_SCRIPT)
    killed = torchrun(str(script), str(config), "6", "train.parallel=fsdp", f"train.out_dir={tmp_path / 'killed'}")
    assert killed.returncode != 0
    ckpt = list_checkpoints(tmp_path / "killed")[-1]
    assert ckpt.name == "step-0000004" and json.loads((ckpt / "meta.json").read_text())["layout"] == "sharded"
    rng = load_trainer_state(ckpt)["rng"]
    assert len(rng) == 2 and not torch.equal(rng[0]["cpu"], rng[1]["cpu"])  # one dropout stream per process
    resumed = torchrun("-m", "futuretoken.cli", "train", "--config", str(config), "--resume", "train.parallel=fsdp",
                       f"train.out_dir={tmp_path / 'killed'}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert train_losses(tmp_path / "straight") == train_losses(tmp_path / "killed")
    wa, wb = load_model(tmp_path / "straight").state_dict(), load_model(tmp_path / "killed").state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


PREPARE_RACE = """
import importlib, os, sys, time
from futuretoken.training import trainer as T
from futuretoken.config import DataConfig
P = importlib.import_module("futuretoken.data.preparation")
real = P.build_tokenizer
def slow_build_tokenizer(*args, **kwargs):  # one call per preparation
    with open(sys.argv[2], "a") as log:
        log.write(f"{os.getpid()}\\n")
    time.sleep(1.0)
    return real(*args, **kwargs)
P.build_tokenizer = slow_build_tokenizer
T.ensure_data(DataConfig(dir=sys.argv[1], corpus=sys.argv[3], tokenizer="bpe:300"))
assert not __import__("torch").distributed.is_initialized()
"""


def test_processes_wait_for_data_preparation_on_a_file_lock(data_dir, tmp_path):
    """Processes that start together prepare the corpus once; the others wait on a file lock,
    not on a collective (which would time out on a large corpus)."""
    script, log, out = tmp_path / "race.py", tmp_path / "prepared-by.txt", tmp_path / "data"
    script.write_text(PREPARE_RACE)
    corpus = str(data_dir.parent / "*.txt")
    procs = [subprocess.Popen([sys.executable, str(script), str(out), str(log), corpus], stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    assert len(log.read_text().splitlines()) == 1
    assert (out / "manifest.json").is_file()


@pytest.mark.parametrize("local_rank,hashed", [("0", True), ("1", False)])
def test_shards_are_hashed_once_per_node(data_dir, tmp_path, monkeypatch, local_rank, hashed):
    import futuretoken.data.shards as shards

    calls = []
    monkeypatch.setattr(shards, "sha256_file", lambda path: calls.append(path) or "not-the-hash")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    if hashed:
        with pytest.raises(DataError, match="corrupt"):  # the fake hash: proof that it was checked
            Trainer(run_config(data_dir, tmp_path / "run"))
    else:
        Trainer(run_config(data_dir, tmp_path / "run")).close()
    assert bool(calls) == hashed


def test_process_seeds_differ_and_data_order_does_not(data_dir):
    assert len({process_seed(0, r) for r in range(8)}) == 8
    tokens = TokenShards(data_dir, "train").tokens
    whole = WindowSampler(tokens, 20, 8, seed=0).batch(3)
    parts = [WindowSampler(tokens, 20, 2, seed=0, rank=r, world=2, accum=2).batch(3, m) for m in (0, 1) for r in (0, 1)]
    assert torch.equal(whole, torch.cat(parts))


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


def test_resume_accepts_a_checkpoint_written_before_newer_model_fields(data_dir, tmp_path):
    """A field added to ModelConfig later (e.g. mtp_lambda) is absent from older checkpoints: it takes its
    default, as when such a checkpoint is loaded, instead of counting as a different config."""
    train(run_config(data_dir, tmp_path / "run", model="gpt", max_steps=4))
    (ckpt,) = list_checkpoints(tmp_path / "run")
    meta_path = ckpt / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["model_config"]["mtp_lambda"], meta["model_config"]["mtp_backward"]
    meta_path.write_text(json.dumps(meta))
    Trainer(run_config(data_dir, tmp_path / "run", model="gpt", max_steps=6), resume=True).close()


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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_training_steps_never_wait_for_the_device(data_dir, tmp_path):
    trainer = Trainer(run_config(data_dir, tmp_path / "run", device="cuda"))
    trainer._pending.append(trainer.train_step())  # first call: allocator and optimizer set-up
    torch.cuda.set_sync_debug_mode("error")  # any device-to-host sync raises
    try:
        for _ in range(3):
            trainer._pending.append(trainer.train_step())
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert len(trainer._read_back()) == 4


def test_a_signal_stops_train_all_instead_of_starting_the_next_run(monkeypatch, data_dir, tmp_path):
    from futuretoken.training import many
    from futuretoken.training.trainer import TrainResult

    started = []

    def stopped(cfg, resume):  # as train returns after SIGINT/SIGTERM: checkpoint saved, interrupted
        started.append(cfg.train.out_dir)
        return TrainResult(Path(cfg.train.out_dir), 3, interrupted=True)

    monkeypatch.setattr(many, "train", stopped)
    configs = [run_config(data_dir, tmp_path / name) for name in ("a", "b")]
    with pytest.raises(many.TrainingInterrupted, match="run the same command again to continue"):
        many.train_all(configs)
    assert started == [str(tmp_path / "a")]
