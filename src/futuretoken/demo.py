"""`futuretoken demo`: the built-in corpus, tiny FTP and GPT on CPU, one report with E1-E5.

Everything is cached: the prepared corpus under runs/data, each model's run folder
under the demo folder. Re-running resumes finished or interrupted runs instead of
starting over, so a second call only re-evaluates and rewrites the report.
The settings are those of configs/experiments/cpu.toml without its [tasks] table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .checkpoint import load_model, read_metrics
from .devices import resolve_device
from .eval.paper import compare
from .eval.report import markdown_table, mean_train_tokens_per_s, plot_loss_curves
from .files import writable_dir
from .infer import SamplingConfig, generate_text
from .reproduce import Experiment, train_pair

DEMO_STEPS = 300
PROMPTS = ["The President said that", "Fellow citizens of the Senate", "To be, or not to be"]


def demo_experiment(steps: int = DEMO_STEPS, device: str = "auto") -> Experiment:
    return Experiment.from_dict({
        "model": {"preset": "tiny"},
        "data": {"dir": "runs/data/prose-bpe4096", "corpus": "builtin:prose", "tokenizer": "bpe:4096"},
        "train": {"batch_size": 16, "max_steps": steps, "lr": 2e-3, "min_lr": 2e-4,
                  "warmup_steps": min(30, steps // 10), "eval_interval": max(1, steps // 6), "eval_batches": 10,
                  "ckpt_interval": max(1, steps // 6), "keep_every": max(1, steps // 6),
                  "log_interval": max(1, steps // 60), "device": device},
        # E1-E5 at CPU scale: a few minutes on 2 cores for both models and their random-init floors.
        "suite": {"eval_batches": 10, "probe_steps": 60, "smooth_windows": 32, "labelled_limit": 400,
                  "coherence_prompts": 6, "coherence_seeds": [0, 1, 2], "coherence_new_tokens": 48},
    })


def _samples(model) -> list[str]:
    device = model.head_weight.device
    return [generate_text(model, prompt, max_new_tokens=48, sampling=SamplingConfig(temperature=0.8, top_k=40),
                          generator=torch.Generator(device=device).manual_seed(i))
            for i, prompt in enumerate(PROMPTS)]


def run_demo(out_dir: str | Path = "runs/demo", steps: int | None = None, device: str = "auto") -> Path:
    out_dir = writable_dir(out_dir, "demo folder")
    steps = steps or DEMO_STEPS
    experiment = demo_experiment(steps, device)
    started = time.perf_counter()
    runs = train_pair(experiment.run, out_dir)
    train_seconds = time.perf_counter() - started

    results: dict[str, dict] = {}
    for name, run_dir in runs.items():
        model = load_model(run_dir, resolve_device(device))
        train_logs = [r for r in read_metrics(run_dir) if r["split"] == "train"]
        results[name] = {
            "tokens_per_s": mean_train_tokens_per_s(run_dir),
            "tokens_seen": train_logs[-1]["tokens"] if train_logs else 0,
            "samples": _samples(model),
        }
    plot_loss_curves({n: runs[n] for n in ("gpt", "ftp")}, out_dir / "loss_curves.png")
    paper = compare(runs["ftp"], runs["gpt"], out_dir / "paper", experiment.suite, device=device)
    results["train_seconds_this_call"] = train_seconds
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    report = out_dir / "report.md"
    report.write_text(render_report(results, steps) + "\n" + _nest(paper.read_text(), "paper/"))
    return report


def _nest(markdown: str, folder: str) -> str:
    """The comparison report as a section of this one (its images live in a sub-folder)."""
    markdown = markdown.replace("\n## ", "\n### ").replace("# FTP vs GPT", "## FTP vs GPT", 1)
    return markdown.replace("](experiments.png)", f"]({folder}experiments.png)")


def render_report(results: dict, steps: int) -> str:
    g, f = results["gpt"], results["ftp"]
    rows = [["training tokens/s (CPU)", round(g["tokens_per_s"]), round(f["tokens_per_s"])],
            ["tokens seen", g["tokens_seen"], f["tokens_seen"]]]
    lines = [
        "# futuretoken demo: tiny FTP vs tiny GPT", "",
        f"Built-in prose corpus (State of the Union + Shakespeare), byte-level BPE (4096), `tiny` preset, "
        f"{steps} steps of 16 x 128 tokens for each model, same data order. One training seed.", "",
        markdown_table(["", "GPT", "FTP"], rows), "",
        "![loss curves](loss_curves.png)", "",
        "## Samples (temperature 0.8, top-k 40, same seed per prompt)",
    ]
    for i, prompt in enumerate(PROMPTS):
        lines += ["", f"**Prompt:** {prompt}", "", f"- GPT: {g['samples'][i]!r}", f"- FTP: {f['samples'][i]!r}"]
    return "\n".join(lines) + "\n"
