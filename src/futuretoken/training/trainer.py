"""The training loop: one path for GPT and FTP, one process or many (torchrun).

The loop never waits for the device between log intervals: a step's loss statistics stay on
the device, and a non-finite loss or gradient skips that step's update on the device (the
fused AdamW `found_inf` mechanism that GradScaler uses). At each sync point (log, validation,
checkpoint, end) the statistics gathered since the last one are read back once; a skipped
step then stops the run with the last good checkpoint named.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import (
    TRAINER_STATE_FIX,
    CheckpointError,
    check_resumable,
    finish_checkpoint,
    latest_valid_checkpoint,
    list_checkpoints,
    load_full_model_state,
    load_trainer_state,
    read_meta,
    save_checkpoint,
    temporary_checkpoint_dir,
    temporary_checkpoint_path,
)
from ..config import ConfigError, DataConfig, RunConfig
from ..data import TokenShards, WindowSampler, prepare
from ..data.preparation import check_prepared_as
from ..data.shards import MANIFEST, data_identity
from ..devices import autocast_dtype, make_deterministic, param_dtype
from ..model import MODELS, training_flops_per_token
from ..storage import LockHeld
from . import distributed
from .objective import LossModule, evaluate, summarise
from .optim import learning_rate, make_optimizer
from .parallelize import parallelize
from .run_folder import RunFolder
from .step import GRAD_NORM, SKIPPED, STOP, TrainStep
from .tracking import open_tracker


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to do."""


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)  # training loss of every step run in this call
    interrupted: bool = False


def ensure_data(cfg: DataConfig) -> Path:
    """The prepared data folder of `cfg`: prepared when it has no manifest yet, and checked against
    the corpus, tokenizer and split the config sets (a folder prepared from anything else is refused).

    Every process may call this: prepare() holds the folder's file lock, so the first process
    prepares and the others wait on the lock (not on a collective, so a long preparation never
    hits a process-group timeout), then find the finished manifest and return.
    """
    data_dir = Path(cfg.dir)
    if not (data_dir / MANIFEST).is_file():
        prepare(out_dir=data_dir, if_missing=True, **cfg.preparation())
    check_prepared_as(data_dir, cfg.corpus, cfg.tokenizer, cfg.val_fraction)
    return data_dir


def process_seed(seed: int, rank: int) -> int:
    """Seed of the random stream (dropout, decoder positions) of process `rank`: distinct per process."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


def _optimizer_misfit(optimizer: torch.optim.Optimizer) -> str | None:
    """Why a loaded optimizer state does not fit its parameters (None when it does): load_state_dict
    takes moments of any shape, and the first step would then fail."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape != param.shape:
                    return f"its {name} of shape {tuple(value.shape)} is for a parameter of shape {tuple(param.shape)}"
    return None


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False) -> None:
        self.cfg = cfg
        self.info = distributed.env_info()
        self.run_dir = Path(cfg.train.out_dir)
        self.folder = RunFolder(self.run_dir)  # held by rank 0 (under torchrun only rank 0 writes it)
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume: bool) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.device = distributed.device_for(tc.device, self.info)
        if self.info.is_main:  # under torchrun only rank 0 writes the run folder
            self._hold_run_folder()
        # Data first, before any collective: see ensure_data. Shards are hashed once per node.
        data_dir = ensure_data(cfg.data)
        verify = cfg.data.verify and self.info.local_rank == 0
        self.train_tokens = TokenShards(data_dir, "train", verify=verify)
        self.val_tokens = TokenShards(data_dir, "val", verify=verify)
        self.data_sha256 = data_identity(self.train_tokens.manifest)
        self.tokenizer_sha256 = self.train_tokens.manifest["tokenizer_sha256"]  # TokenShards checked the file
        distributed.init(self.info, self.device)
        if tc.deterministic:
            make_deterministic()
        # The data decide the vocabulary and the document separator.
        cfg.model.vocab_size = self.train_tokens.vocab_size
        cfg.model.eot_token = self.train_tokens.eot_token
        cfg.model.validate()

        self.ckpt = self._checkpoint_to_resume(resume)
        torch.manual_seed(tc.seed)  # the same initial weights in every process
        self.model = MODELS[tc.model](cfg.model).to(self.device, dtype=param_dtype(tc.dtype))
        torch.manual_seed(process_seed(tc.seed, self.info.rank))
        window = cfg.model.block_size + self.model.horizon
        self.sampler = WindowSampler(self.train_tokens.tokens, window, tc.batch_size, tc.seed,
                                     self.info.rank, self.info.world, tc.grad_accum)
        self.val_sampler = WindowSampler(self.val_tokens.tokens, window, tc.batch_size, tc.seed + 1,
                                         self.info.rank, self.info.world)
        amp = autocast_dtype(tc.dtype, self.device)
        self.loss_module = parallelize(LossModule(self.model), self.model, self.info, self.device, tc.parallel, amp,
                                       tc.activation_checkpointing, tc.compile)
        self.sharded = distributed.is_sharded(self.loss_module)
        self.amp = None if self.sharded else amp  # FSDP's mixed-precision policy computes in bf16 itself
        self.optimizer = make_optimizer(self.loss_module, tc)
        self.stepper = TrainStep(self.loss_module, self.optimizer, tc, self.model.horizon, self.device, self.amp,
                                 self.info)
        self.step, self.tokens_seen = 0, 0
        self._pending: list[torch.Tensor] = []  # statistics rows of steps not yet read back
        self._stop_signal: int | None = None
        if self.ckpt is not None:
            self._restore(self.ckpt)
        elif self.info.is_main:
            self.folder.write_record(cfg, data_dir, self.train_tokens.manifest, self.data_sha256)
        # Live curves (train.tracker), on the process that writes metrics.jsonl.
        self.tracker = open_tracker(tc.tracker if self.info.is_main else "none", self.run_dir, cfg.to_dict(), self.step)

    # --- checkpoints -----------------------------------------------------------------------
    def _hold_run_folder(self) -> None:
        try:
            self.folder.hold()
        except LockHeld as err:
            raise TrainingError(
                f"{self.run_dir} is in use by another training (process {err.holder}). Fix: wait for it to finish "
                "or stop it (then --resume), or set train.out_dir to another folder"
            ) from None

    def _checkpoint_to_resume(self, resume: bool) -> Path | None:
        existing = list_checkpoints(self.run_dir)
        if not resume:
            if existing:
                raise ConfigError(
                    f"{self.run_dir} already holds checkpoints; pass --resume to continue that run, "
                    "or set train.out_dir to a new folder"
                )
            return None
        ckpt = latest_valid_checkpoint(self.run_dir)
        if ckpt is None:
            if existing:
                raise CheckpointError(f"no checkpoint in {self.run_dir} passed its checksum; cannot resume")
            return None  # nothing saved yet: --resume starts from scratch
        check_resumable(ckpt, self.cfg.train.model, self.cfg.model, self.data_sha256, str(self.cfg.data.dir),
                        sharded=self.info.enabled and self.cfg.train.parallel == "fsdp")
        return ckpt

    def _restore(self, ckpt: Path) -> None:
        meta = read_meta(ckpt, verify=False)  # _checkpoint_to_resume has just verified it
        state = load_trainer_state(ckpt, meta)
        if self.sharded:
            distributed.load_sharded(self.loss_module, self.optimizer, ckpt / "dcp")
        else:
            model_sd = {f"model.{k}": v for k, v in load_full_model_state(ckpt, meta).items()}
            try:
                distributed.load_full_state_dicts(self.loss_module, self.optimizer, model_sd, state["optimizer"])
                problem = _optimizer_misfit(self.optimizer)
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
                problem = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
            if problem:
                raise CheckpointError(f"{ckpt}/trainer.pt holds an optimizer state that does not fit the model "
                                      f"({problem}). {TRAINER_STATE_FIX}")
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        rng = state["rng"][self.info.rank % len(state["rng"])]  # another world size cannot be exact
        torch.set_rng_state(rng["cpu"])
        if self.device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"])
        if self.info.is_main:  # forget metrics logged after the checkpoint: they will be redone
            self.folder.forget_after(self.step)
            self._say(f"resumed from {ckpt} at step {self.step}")

    def _rng_state(self) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def _weights_finite(self) -> bool:
        """Every weight of every process is finite (one read-back, at checkpoints only)."""
        local = [p.to_local() if hasattr(p, "to_local") else p for p in self.model.parameters()]  # FSDP: own shard
        bad = sum((~torch.isfinite(t.detach())).sum() for t in local).double()
        return distributed.sum_across(bad, self.info).item() == 0

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (collective: every process calls it).

        Weights that are not finite are never saved: a checkpoint is always a good one to go back to.
        """
        if not self._weights_finite():
            raise TrainingError(
                f"the weights are not finite at step {self.step} (an update overflowed), so no checkpoint is written. "
                f"Last good checkpoint: {latest_valid_checkpoint(self.run_dir) or 'none'}. Lower train.lr or "
                "raise warmup_steps, then continue with --resume"
            )
        trainer_state = {"step": self.step, "tokens_seen": self.tokens_seen,
                         "rng": distributed.gather_objects(self._rng_state(), self.info)}
        meta = {"model_type": self.cfg.train.model, "model_config": self.cfg.model.to_dict(),
                "tokens_seen": self.tokens_seen, "data_sha256": self.data_sha256,
                "tokenizer_sha256": self.tokenizer_sha256}
        try:
            if self.sharded:
                return self._save_sharded(trainer_state, meta)
            model_sd, trainer_state["optimizer"] = distributed.full_state_dicts(self.loss_module, self.optimizer)
            if not self.info.is_main:
                return None
            model_sd = {k.removeprefix("model."): v for k, v in model_sd.items()}
            return save_checkpoint(self.run_dir, self.step, model_sd, trainer_state, meta,
                                   self.cfg.train.keep_last, self.cfg.train.keep_every)
        except OSError as err:  # disk full, read-only folder, ...: earlier checkpoints are untouched
            raise TrainingError(
                f"could not write the checkpoint of step {self.step} to {self.run_dir}: {err}. "
                f"The previous checkpoint is intact ({latest_valid_checkpoint(self.run_dir) or 'none yet'}); "
                "free disk space or fix the folder's permissions, then continue with --resume"
            ) from err

    def _save_sharded(self, trainer_state: dict, meta: dict) -> Path | None:
        """Every process writes its shards into one temporary folder; rank 0 hashes and renames it."""
        tc = self.cfg.train
        if self.info.is_main:
            temporary_checkpoint_dir(self.run_dir, self.step)
        distributed.barrier(self.info)
        tmp = temporary_checkpoint_path(self.run_dir, self.step)
        distributed.save_sharded(self.loss_module, self.optimizer, tmp / "dcp")
        final = None
        if self.info.is_main:
            torch.save(trainer_state, tmp / "trainer.pt")
            final = finish_checkpoint(tmp, self.step, {"layout": "sharded", **meta}, tc.keep_last, tc.keep_every)
        distributed.barrier(self.info)  # nobody writes the next checkpoint before this one is in place
        return final

    # --- logging ---------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.info.is_main:
            print(f"[futuretoken] {message}", flush=True)

    def _log(self, record: dict) -> None:
        if self.info.is_main:
            self.folder.log(record)
            self.tracker.log(record)

    # --- the loop --------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self._stop_signal = signum

    def _batch(self, micro: int) -> torch.Tensor:
        tokens = self.sampler.batch(self.step, micro)  # (b, T + horizon) on the host
        if self.device.type == "cuda":  # pinned memory: the copy does not wait for the device
            return tokens.pin_memory().to(self.device, non_blocking=True)
        return tokens

    def train_step(self) -> torch.Tensor:
        """One optimizer step (training/step.py); returns its statistics row, still on the device."""
        return self.stepper(self.step, self._batch, self._stop_signal is not None)

    def _read_back(self) -> list[list[float]]:
        """The statistics rows of the steps since the last sync point: the one device-to-host copy."""
        rows = torch.stack(self._pending).tolist() if self._pending else []
        self._pending = []
        first_step = self.step - len(rows) + 1
        for offset, row in enumerate(rows):
            if row[SKIPPED]:
                value = summarise(row[:GRAD_NORM])["loss"]
                last = latest_valid_checkpoint(self.run_dir)
                raise TrainingError(
                    f"loss is {value} (or its gradient is not finite) at step {first_step + offset}; that update "
                    f"was skipped, so no weight saw it. Last good checkpoint: {last or 'none'}. Lower train.lr, "
                    "raise warmup_steps, or check the data; then continue with --resume"
                )
        return rows

    def fit(self, on_step: Callable[[int], None] | None = None) -> TrainResult:
        """Train to max_steps. `on_step(step)` runs after every step (hooks, fault injection)."""
        tc = self.cfg.train
        result = TrainResult(self.run_dir, self.step)
        tokens_per_step = tc.batch_size * tc.grad_accum * self.info.world * self.cfg.model.block_size
        flops_per_token = training_flops_per_token(self.cfg.model, tc.model)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = None
        if self.info.is_main and tc.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=tc.max_steps, initial=self.step, desc=f"train {tc.model}", unit="step", dynamic_ncols=True)
        self.loss_module.train()
        started, window_start, window_tokens = time.perf_counter(), time.perf_counter(), 0
        try:
            while self.step < tc.max_steps:
                self._pending.append(self.train_step())
                self.step += 1
                self.tokens_seen += tokens_per_step
                window_tokens += tokens_per_step
                if bar is not None:
                    bar.update(1)
                if on_step is not None:
                    on_step(self.step)
                log = self.step % tc.log_interval == 0 or self.step == tc.max_steps
                validate = self.step % tc.eval_interval == 0 or self.step == tc.max_steps
                checkpoint = self.step % tc.ckpt_interval == 0 or self.step == tc.max_steps
                # One process stops at once; several agree on the signal at the next sync point.
                signalled = not self.info.enabled and self._stop_signal is not None
                if not (log or validate or checkpoint or signalled):
                    continue
                rows = self._read_back()
                result.losses += [summarise(r[:GRAD_NORM])["loss"] for r in rows]
                stop = any(r[STOP] for r in rows) or signalled
                if log:
                    elapsed = time.perf_counter() - window_start
                    tps = window_tokens / max(elapsed, 1e-9)
                    metrics = summarise(rows[-1][:GRAD_NORM])
                    self._log({"step": self.step, "split": "train", "loss": metrics["loss"],
                               "per_distance": metrics["per_distance"], "lr": learning_rate(self.step - 1, tc),
                               "grad_norm": float(rows[-1][GRAD_NORM]),
                               "tokens": self.tokens_seen, "tokens_per_s": tps, "flops_per_s": tps * flops_per_token})
                    window_start, window_tokens = time.perf_counter(), 0
                    if bar is not None:
                        bar.set_postfix(loss=f"{metrics['loss']:.3f}", tok_s=f"{tps:,.0f}")
                if validate:
                    metrics = evaluate(self.loss_module, self.val_sampler, tc.eval_batches, self.device, self.amp,
                                       self.info)
                    self._log({"step": self.step, "split": "val", "tokens": self.tokens_seen, **metrics})
                if checkpoint or stop:
                    self.save()
                if stop:
                    self._say(f"stopped by signal at step {self.step}; checkpoint saved, continue with --resume")
                    result.interrupted = True
                    break
        finally:
            if bar is not None:
                bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        result.step = self.step
        self._say(f"{tc.model}: {self.step} steps, {time.perf_counter() - started:.1f}s, run folder {self.run_dir}")
        return result

    def close(self) -> None:
        if getattr(self, "tracker", None) is not None:
            self.tracker.close()
            self.tracker = None
        distributed.teardown(self.info)
        self.folder.release()


def train(cfg: RunConfig, resume: bool = False) -> TrainResult:
    """Train (or resume) the run described by `cfg`; returns when max_steps is reached or on a signal."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()
