"""The training loop: one path for GPT and FTP, one process or many (torchrun)."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..config import ConfigError, RunConfig
from ..data import TokenShards, prepare
from ..files import atomic_write
from ..model import MODELS, LanguageModel, training_flops_per_token
from . import distributed as D
from .checkpoint import (
    CheckpointError,
    latest_valid_checkpoint,
    list_checkpoints,
    load_trainer_state,
    read_meta,
    save_checkpoint,
)
from .memory import apply_activation_checkpointing
from .optim import learning_rate, make_optimizer
from .sampler import WindowSampler


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); the message says what to do."""


class LossModule(nn.Module):
    """forward(tokens) -> (total, per_distance): gives DDP/FSDP a forward to hook into."""

    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.loss(tokens)
        return out.total, out.per_distance


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    losses: list[float] = field(default_factory=list)  # training loss of every step run in this call
    interrupted: bool = False


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


@torch.no_grad()
def evaluate(model: LanguageModel | nn.Module, sampler: WindowSampler, n_batches: int, device: torch.device,
             amp: torch.dtype | None = None) -> dict[str, float | list[float]]:
    """Mean loss over fixed validation batches: next-token loss, FTP total and per distance.

    `model` is a LanguageModel or its (possibly DDP/FSDP-wrapped) LossModule: sharded
    parameters are only gathered when the call goes through the wrapper's forward.
    """
    loss_fn = LossModule(model) if isinstance(model, LanguageModel) else model
    was_training = loss_fn.training
    loss_fn.eval()
    totals, per_distance = [], []
    for i in range(n_batches):
        tokens = sampler.batch(step=i).to(device)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            total, per_k = loss_fn(tokens)
        totals.append(total.float().item())
        per_distance.append(per_k.float().cpu())
    loss_fn.train(was_training)
    per_k = torch.stack(per_distance).mean(0).tolist()
    return {"loss": float(np.mean(totals)), "next_token_loss": per_k[0], "per_distance": per_k}


def ensure_data(cfg: RunConfig, info: D.DistInfo) -> Path:
    """Prepare the token shards once (on rank 0) when the data folder does not exist yet."""
    data_dir = Path(cfg.data.dir)
    if info.is_main and not (data_dir / "manifest.json").is_file():
        prepare(corpus=cfg.data.corpus, tokenizer=cfg.data.tokenizer, out_dir=data_dir,
                val_fraction=cfg.data.val_fraction)
    D.barrier(info)
    return data_dir


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False) -> None:
        self.cfg, tc = cfg, cfg.train
        self.info, self.device = D.setup(tc.device)
        self.amp = autocast_dtype(tc.dtype, self.device)
        self.run_dir = Path(tc.out_dir)
        data_dir = ensure_data(cfg, self.info)
        verify = cfg.data.verify
        self.train_tokens = TokenShards(data_dir, "train", verify=verify)
        self.val_tokens = TokenShards(data_dir, "val", verify=verify)
        # The data decide the vocabulary and the document separator.
        cfg.model.vocab_size = self.train_tokens.vocab_size
        cfg.model.eot_token = self.train_tokens.eot_token
        cfg.model.validate()

        self.ckpt = self._checkpoint_to_resume(resume)
        torch.manual_seed(tc.seed)
        self.model = MODELS[tc.model](cfg.model).to(self.device)
        apply_activation_checkpointing(self.model, tc.activation_checkpointing)
        window = cfg.model.block_size + self.model.horizon
        self.sampler = WindowSampler(self.train_tokens.tokens, window, tc.batch_size, tc.seed,
                                     self.info.rank, self.info.world)
        self.val_sampler = WindowSampler(self.val_tokens.tokens, window, tc.batch_size, tc.seed + 1)
        self.loss_module = D.wrap(LossModule(self.model), self.info, self.device, tc.parallel)
        self.optimizer = make_optimizer(self.loss_module, tc, self.device.type)
        self.forward = torch.compile(self.loss_module) if tc.compile else self.loss_module
        self.step, self.tokens_seen = 0, 0
        if self.ckpt is not None:
            self._restore(self.ckpt)
        elif self.info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(self.run_dir / "run.json", json.dumps(cfg.to_dict() | {"model_type": tc.model}, indent=2))
            shutil.copy(data_dir / "tokenizer.json", self.run_dir / "tokenizer.json")
            (self.run_dir / "metrics.jsonl").write_text("")
        self._stop_signal: int | None = None

    # --- checkpoints -----------------------------------------------------------------------
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
        meta = read_meta(ckpt)
        if meta["model_type"] != self.cfg.train.model:
            raise CheckpointError(
                f"{ckpt} holds a '{meta['model_type']}' model but the config trains '{self.cfg.train.model}'; "
                "set train.model to match, or use another out_dir"
            )
        saved, wanted = meta["model_config"], self.cfg.model.to_dict()
        diff = {k: (saved.get(k), v) for k, v in wanted.items() if saved.get(k) != v}
        if diff:
            raise CheckpointError(
                f"{ckpt} was trained with a different model config {diff} (saved, now); "
                "resume with the original config and data, or use another out_dir"
            )
        return ckpt

    def _restore(self, ckpt: Path) -> None:
        from safetensors.torch import load_file

        state = load_trainer_state(ckpt)
        model_sd = {f"model.{k}": v for k, v in load_file(ckpt / "model.safetensors").items()}
        D.load_full_state_dicts(self.loss_module, self.optimizer, model_sd, state["optimizer"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"])
        if self.info.is_main:  # forget metrics logged after the checkpoint: they will be redone
            path = self.run_dir / "metrics.jsonl"
            kept = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln)["step"] <= self.step]
            atomic_write(path, "".join(ln + "\n" for ln in kept))
            self._say(f"resumed from {ckpt} at step {self.step}")

    def save(self) -> Path | None:
        model_sd, optim_sd = D.full_state_dicts(self.loss_module, self.optimizer)
        if not self.info.is_main:
            return None
        trainer_state = {"optimizer": optim_sd, "step": self.step, "tokens_seen": self.tokens_seen,
                         "rng_cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            trainer_state["rng_cuda"] = torch.cuda.get_rng_state()
        meta = {"model_type": self.cfg.train.model, "model_config": self.cfg.model.to_dict(),
                "tokens_seen": self.tokens_seen}
        model_sd = {k.removeprefix("model."): v for k, v in model_sd.items()}
        try:
            return save_checkpoint(self.run_dir, self.step, model_sd, trainer_state, meta,
                                   self.cfg.train.keep_last, self.cfg.train.keep_every)
        except OSError as err:  # disk full, read-only folder, ...: earlier checkpoints are untouched
            raise TrainingError(
                f"could not write the checkpoint of step {self.step} to {self.run_dir}: {err}. "
                f"The previous checkpoint is intact ({latest_valid_checkpoint(self.run_dir) or 'none yet'}); "
                "free disk space or fix the folder's permissions, then continue with --resume"
            ) from err

    # --- logging ---------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.info.is_main:
            print(f"[futuretoken] {message}", flush=True)

    def _log(self, record: dict) -> None:
        if self.info.is_main:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    # --- the loop --------------------------------------------------------------------------
    def _on_signal(self, signum, _frame) -> None:
        self._stop_signal = signum

    def train_step(self) -> tuple[float, list[float]]:
        tc = self.cfg.train
        lr = learning_rate(self.step, tc)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=self.device)
        per_distance = torch.zeros(self.model.horizon, device=self.device)
        for micro in range(tc.grad_accum):
            tokens = self.sampler.batch(self.step, micro).to(self.device, non_blocking=True)
            last = micro == tc.grad_accum - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.loss_module, "no_sync") \
                else self.loss_module.no_sync()
            with sync, torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
                loss, per_k = self.forward(tokens)
                (loss / tc.grad_accum).backward()
            total += loss.detach() / tc.grad_accum
            per_distance += per_k.detach().float() / tc.grad_accum
        total = D.mean_across(total, self.info)
        loss_value = total.item()
        if not math.isfinite(loss_value):
            last = latest_valid_checkpoint(self.run_dir)
            raise TrainingError(
                f"loss is {loss_value} at step {self.step + 1}; the update was not applied. "
                f"Last good checkpoint: {last or 'none'}. Lower train.lr, raise warmup_steps, or check the data; "
                "then continue with --resume"
            )
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.loss_module.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, D.mean_across(per_distance, self.info).tolist()

    def fit(self, on_step: Callable[[int, float], None] | None = None) -> TrainResult:
        """Train to max_steps. `on_step(step, loss)` runs after every step (hooks, fault injection)."""
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
                loss, per_k = self.train_step()
                self.step += 1
                self.tokens_seen += tokens_per_step
                window_tokens += tokens_per_step
                result.losses.append(loss)
                if on_step is not None:
                    on_step(self.step, loss)
                if self.step % tc.log_interval == 0 or self.step == tc.max_steps:
                    elapsed = time.perf_counter() - window_start
                    tps = window_tokens / max(elapsed, 1e-9)
                    self._log({"step": self.step, "split": "train", "loss": loss, "per_distance": per_k,
                               "lr": learning_rate(self.step - 1, tc), "tokens": self.tokens_seen,
                               "tokens_per_s": tps, "flops_per_s": tps * flops_per_token})
                    window_start, window_tokens = time.perf_counter(), 0
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
                if bar is not None:
                    bar.update(1)
                if self.step % tc.eval_interval == 0 or self.step == tc.max_steps:
                    metrics = evaluate(self.loss_module, self.val_sampler, tc.eval_batches, self.device, self.amp)
                    self._log({"step": self.step, "split": "val", "tokens": self.tokens_seen, **metrics})
                stop = D.any_across(self._stop_signal is not None, self.info, self.device)
                if self.step % tc.ckpt_interval == 0 or self.step == tc.max_steps or stop:
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
        D.teardown(self.info)


def train(cfg: RunConfig, resume: bool = False) -> TrainResult:
    """Train (or resume) the run described by `cfg`; returns when max_steps is reached or on a signal."""
    trainer = Trainer(cfg, resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()
