"""`futuretoken bench train`: training throughput, MFU and peak memory of every model type.

Every variant (GPT; FTP with all positions through the decoder, with and without
recomputing the decoder's activations, with torch's and with our own chunked cross-entropy;
FTP with a quarter of the positions; MTP with its sequential and its joint head backward;
MTP-seq) runs in its own child process, so peak memory is its own and nothing is shared.
Each runs `warmup` optimizer steps (compilation included), then times `steps` calls of
the trainer's own step (training/step.py TrainStep, which Trainer.train_step calls: AdamW, gradient
clipping, the skip on a non-finite loss, bf16 autocast on CUDA, optional per-block torch.compile)
on random tokens. MFU = achieved training FLOP/s (documented count, decoder and heads included) / the
device's dense bf16 peak; on CPU no peak is known and MFU is left empty.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from ..config import ModelConfig, TrainConfig
from ..devices import autocast_dtype
from ..model import MODELS, training_flops_per_token
from ..model.loss import resolve_implementation
from ..training.distributed import DistInfo
from ..training.objective import LossModule
from ..training.optim import make_optimizer
from ..training.parallelize import parallelize
from ..training.step import TrainStep
from .env import WAIT_POLICY, environment

# Dense bf16 tensor-core peaks (FLOP/s), from the vendors' data sheets.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}

# (model, decoder_fraction, activation checkpointing, loss implementation, MTP's head backward)
VARIANTS = [("gpt", 1.0, "none", "auto", "sequential"), ("ftp", 1.0, "none", "auto", "sequential"),
            ("ftp", 1.0, "none", "chunked", "sequential"), ("ftp", 1.0, "decoder", "auto", "sequential"),
            ("ftp", 0.25, "none", "auto", "sequential"), ("mtp", 1.0, "none", "auto", "sequential"),
            ("mtp", 1.0, "none", "auto", "joint"), ("mtp_seq", 1.0, "none", "auto", "sequential")]


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def saved_activation_bytes(forward, device: torch.device, amp) -> int:
    """The most bytes autograd holds for backward at any moment of one forward and its backward: a
    device-independent memory measure (peak RSS on CPU also counts the allocator's caches and the
    libraries). A saved tensor counts while the graph holds it, so what a backward run during forward
    frees at once (MTP's sequential heads) counts only while it lives."""
    held = {"now": 0, "peak": 0}

    class Saved:  # lives exactly as long as autograd keeps the tensor for backward
        def __init__(self, t: torch.Tensor) -> None:
            self.tensor, self.size = t, t.numel() * t.element_size()
            held["now"] += self.size
            held["peak"] = max(held["peak"], held["now"])

        def __del__(self) -> None:
            held["now"] -= self.size

    with torch.autograd.graph.saved_tensors_hooks(Saved, lambda saved: saved.tensor):
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            loss = forward()
        loss.backward()
    return held["peak"]


def measure(model_type: str, preset: str, batch_size: int, decoder_fraction: float, checkpointing: str,
            steps: int, warmup: int, compile: bool, device_name: str, loss_impl: str = "auto",
            mtp_backward: str = "sequential") -> dict:
    """One variant in this process: seconds per step, tokens/s, FLOP/s, MFU, peak memory."""
    device = torch.device(device_name)
    cfg = ModelConfig.preset(preset, decoder_fraction=decoder_fraction, loss_impl=loss_impl, mtp_backward=mtp_backward)
    torch.manual_seed(0)
    model = MODELS[model_type](cfg).to(device).train()
    amp = autocast_dtype("auto", device)
    tc = TrainConfig(model=model_type, batch_size=batch_size, activation_checkpointing=checkpointing, compile=compile)
    # As the trainer sets it up: activation checkpointing, then per-block compile (one process: no DDP/FSDP).
    loss_module = parallelize(LossModule(model), model, DistInfo(), device, tc.parallel, amp, checkpointing, compile)
    train_step = TrainStep(loss_module, make_optimizer(loss_module, tc), tc, model.horizon, device, amp, DistInfo())
    loss_fn = model.loss
    tokens = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size + model.horizon), device=device)
    done = 0

    def step() -> None:
        nonlocal done
        train_step(done, lambda micro: tokens)
        done += 1

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    activation_bytes = saved_activation_bytes(lambda: loss_fn(tokens).total, device, amp)
    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    tokens_per_s = batch_size * cfg.block_size / seconds
    flops = tokens_per_s * training_flops_per_token(cfg, model_type)
    peak = peak_flops(device)
    memory = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model_type, "decoder_fraction": decoder_fraction if model_type == "ftp" else None,
            "mtp_backward": mtp_backward if model_type == "mtp" else None,
            "activation_checkpointing": checkpointing, "loss_impl": resolve_implementation(loss_impl),
            "parameters": model.num_parameters(), "step_s": seconds, "tokens_per_s": tokens_per_s,
            "train_flops_per_token": training_flops_per_token(cfg, model_type), "flops_per_s": flops,
            "mfu": flops / peak if peak else None, "peak_memory_bytes": memory,
            "saved_activation_bytes": activation_bytes,
            "memory_kind": "max allocated (CUDA)" if device.type == "cuda" else "peak RSS of the process"}


def child_env() -> dict[str, str]:
    """The environment of a measuring child: OpenMP threads that sleep while they wait, unless set otherwise."""
    return {**os.environ, WAIT_POLICY: os.environ.get(WAIT_POLICY, "PASSIVE")}


def bench_train(preset: str, batch_size: int, steps: int, warmup: int, compile: bool, device_name: str) -> dict:
    ModelConfig.preset(preset)  # an unknown preset is a ConfigError here, not a child's traceback
    for name, value, least in (("batch_size", batch_size, 1), ("steps", steps, 1), ("warmup", warmup, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{name}={value!r} is invalid: give an integer >= {least}")
    rows = []
    for model_type, fraction, checkpointing, loss_impl, mtp_backward in VARIANTS:
        cmd = [sys.executable, "-m", "futuretoken.bench.train", "--one", model_type, "--preset", preset,
               "--batch-size", str(batch_size), "--decoder-fraction", str(fraction),
               "--activation-checkpointing", checkpointing, "--loss-impl", loss_impl, "--mtp-backward", mtp_backward,
               "--steps", str(steps), "--warmup", str(warmup), "--device", device_name] + (["--compile"] if compile else [])
        out = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
        if out.returncode != 0:
            raise RuntimeError(f"benchmark of {model_type} (decoder_fraction={fraction}, checkpointing={checkpointing}, "
                               f"loss {loss_impl}, head backward {mtp_backward}) "
                               f"failed:\n{out.stderr[-2000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    gpt = rows[0]
    for r in rows:
        r["tokens_per_s_vs_gpt"] = r["tokens_per_s"] / gpt["tokens_per_s"]
        r["memory_vs_gpt"] = r["peak_memory_bytes"] / gpt["peak_memory_bytes"]
        r["saved_activations_vs_gpt"] = r["saved_activation_bytes"] / gpt["saved_activation_bytes"]
    return {"benchmark": "train", **environment(torch.device(device_name)), "preset": preset,
            "batch_size": batch_size, "block_size": ModelConfig.preset(preset).block_size, "steps": steps,
            "warmup": warmup, "compile": compile, "child_omp_wait_policy": child_env()[WAIT_POLICY], "results": rows}


def format_table(result: dict) -> str:
    lines = [f"training benchmark: preset {result['preset']}, batch {result['batch_size']} x {result['block_size']}, "
             f"{result['device']} (torch {result['torch']}), compile={result['compile']}",
             "model    dec.frac  heads bwd   recompute  loss     step ms   tokens/s  vs GPT  TFLOP/s    MFU"
             "   peak mem MiB  vs GPT  activations MiB  vs GPT"]
    for r in result["results"]:
        mfu = f"{100 * r['mfu']:5.1f}%" if r["mfu"] is not None else "    - "
        frac = f"{r['decoder_fraction']:.2f}" if r["decoder_fraction"] is not None else "  - "
        heads = r.get("mtp_backward") or "-"
        lines.append(f"{r['model']:<7}  {frac:>8}  {heads:<10}  {r['activation_checkpointing']:>9}  {r['loss_impl']:<7}  "
                     f"{1000 * r['step_s']:7.1f}  "
                     f"{r['tokens_per_s']:9.0f}  {r['tokens_per_s_vs_gpt']:5.2f}x  {r['flops_per_s'] / 1e12:7.3f}  {mfu}  "
                     f"{r['peak_memory_bytes'] / 2**20:12.0f}  {r['memory_vs_gpt']:5.2f}x"
                     f"  {r['saved_activation_bytes'] / 2**20:15.1f}  {r['saved_activations_vs_gpt']:5.2f}x")
    return "\n".join(lines)


def _child() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--batch-size", type=int, required=True)
    p.add_argument("--decoder-fraction", type=float, default=1.0)
    p.add_argument("--activation-checkpointing", default="none")
    p.add_argument("--loss-impl", default="auto")
    p.add_argument("--mtp-backward", default="sequential")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--warmup", type=int, required=True)
    p.add_argument("--device", required=True)
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    print(json.dumps(measure(a.one, a.preset, a.batch_size, a.decoder_fraction, a.activation_checkpointing, a.steps,
                             a.warmup, a.compile, a.device, a.loss_impl, a.mtp_backward)))


if __name__ == "__main__":
    _child()
