"""`futuretoken demo`: the built-in corpus, tiny FTP and GPT on CPU, one report.

Everything is cached: the prepared corpus under runs/data, each model's run folder
under the demo folder. Re-running resumes finished or interrupted runs instead of
starting over, so a second call only rewrites the report.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from .config import RunConfig
from .eval.paper import SuiteSettings, compare
from .eval.report import markdown_table, plot_loss_curves, read_metrics
from .eval.smoothness import smoothness
from .model import training_flops_per_token
from .train import WindowSampler, evaluate, load_model, train

DEMO_STEPS = 300
# E1-E5 at CPU scale: a few minutes on 2 cores for both models and their random-init floors.
DEMO_SUITE = SuiteSettings(eval_batches=10, probe_steps=60, smooth_windows=32, labelled_limit=400,
                           coherence_prompts=6, coherence_seeds=(0, 1, 2), coherence_new_tokens=48)
PROMPTS = ["The President said that", "Fellow citizens of the Senate", "To be, or not to be"]


def demo_config(model: str, out_dir: Path, steps: int, device: str) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"preset": "tiny"},
        "data": {"dir": "runs/data/prose-bpe4096", "corpus": "builtin:prose", "tokenizer": "bpe:4096"},
        "train": {"model": model, "out_dir": str(out_dir / model), "batch_size": 16, "max_steps": steps,
                  "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": min(30, steps // 10), "eval_interval": max(1, steps // 6),
                  "eval_batches": 10, "ckpt_interval": max(1, steps // 6), "keep_every": max(1, steps // 6),
                  "log_interval": max(1, steps // 60),
                  "device": device},
    })


def _samples(model, tokenizer, device) -> list[str]:
    from .infer import SamplingConfig, generate

    texts = []
    for i, prompt in enumerate(PROMPTS):
        ids = torch.tensor([tokenizer.encode(prompt)], device=device)
        out = generate(model, ids, max_new_tokens=48, sampling=SamplingConfig(temperature=0.8, top_k=40),
                       generator=torch.Generator(device=device).manual_seed(i))
        texts.append(tokenizer.decode(out.tokens[0].tolist()))
    return texts


def run_demo(out_dir: str | Path = "runs/demo", steps: int | None = None, device: str = "auto") -> Path:
    from .data import TokenShards, load_tokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    steps = steps or DEMO_STEPS
    results: dict[str, dict] = {}
    for name in ("gpt", "ftp"):
        cfg = demo_config(name, out_dir, steps, device)
        started = time.perf_counter()
        train(cfg, resume=True)
        results[name] = {"train_call_s": time.perf_counter() - started}

    data_dir = Path(demo_config("gpt", out_dir, steps, device).data.dir)
    tokenizer = load_tokenizer(data_dir)
    val = TokenShards(data_dir, "val").tokens
    for name in ("gpt", "ftp"):
        run_dir = out_dir / name
        model = load_model(run_dir, device="cuda" if device == "auto" and torch.cuda.is_available() else "cpu")
        dev = next(model.parameters()).device
        cfg = model.config
        sampler = WindowSampler(val, cfg.block_size + model.horizon, 16, seed=1234)
        train_logs = [r for r in read_metrics(run_dir) if r["split"] == "train"]
        metrics = evaluate(model, sampler, 20, dev)
        windows = [sampler.batch(i)[:, : cfg.block_size] for i in range(8)]
        results[name] |= {
            "parameters": model.num_parameters(),
            "train_flops_per_token": training_flops_per_token(cfg, name),
            "tokens_per_s": sum(r["tokens_per_s"] for r in train_logs) / max(1, len(train_logs)),
            "tokens_seen": train_logs[-1]["tokens"] if train_logs else 0,
            "val_next_token_loss": metrics["next_token_loss"],
            "val_perplexity": math.exp(metrics["next_token_loss"]),
            "val_per_distance": metrics["per_distance"],
            **smoothness(model, windows),
            "samples": _samples(model, tokenizer, dev),
        }
    plot_loss_curves({n: out_dir / n for n in ("gpt", "ftp")}, out_dir / "loss_curves.png")
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    paper = compare(out_dir / "ftp", out_dir / "gpt", out_dir / "paper", DEMO_SUITE)
    report = out_dir / "report.md"
    report.write_text(render_report(results, steps) + "\n" + _demote_headings(paper.read_text(), "paper/"))
    return report


def _demote_headings(markdown: str, image_prefix: str) -> str:
    """Nest the comparison report under the demo report (its images live in a sub-folder)."""
    return markdown.replace("\n## ", "\n### ").replace("# FTP vs GPT", "## FTP vs GPT", 1) \
        .replace("](experiments.png)", f"]({image_prefix}experiments.png)")


def render_report(results: dict[str, dict], steps: int) -> str:
    g, f = results["gpt"], results["ftp"]
    rows = [
        ["parameters", g["parameters"], f["parameters"]],
        ["training FLOPs / token", f"{g['train_flops_per_token']:.3g}", f"{f['train_flops_per_token']:.3g}"],
        ["training tokens/s", round(g["tokens_per_s"]), round(f["tokens_per_s"])],
        ["tokens seen", g["tokens_seen"], f["tokens_seen"]],
        ["val next-token loss (nats)", g["val_next_token_loss"], f["val_next_token_loss"]],
        ["val perplexity", g["val_perplexity"], f["val_perplexity"]],
        ["adjacent cosine of h_t (raw)", g["cosine"], f["cosine"]],
        ["adjacent cosine of h_t (centred)", g["cosine_centred"], f["cosine_centred"]],
    ]
    per_k = ", ".join(f"k={k + 1}: {v:.3f}" for k, v in enumerate(f["val_per_distance"]))
    lines = [
        "# futuretoken demo: tiny FTP vs tiny GPT",
        "",
        f"Built-in prose corpus, byte-level BPE (4096), `tiny` preset, {steps} steps of 16 x 128 tokens each, "
        "same data order for both models. One seed: differences this small are not significant.",
        "",
        markdown_table(["", "GPT", "FTP"], rows),
        "",
        f"FTP validation loss by distance ahead: {per_k}.",
        "",
        "![loss curves](loss_curves.png)",
        "",
        "## Samples (temperature 0.8, top-k 40, same seed per prompt)",
    ]
    for i, prompt in enumerate(PROMPTS):
        lines += ["", f"**Prompt:** {prompt}", "", f"- GPT: {g['samples'][i]!r}", f"- FTP: {f['samples'][i]!r}"]
    return "\n".join(lines) + "\n"
