"""`futuretoken demo`: the built-in corpus, tiny FTP and GPT on CPU, one report with the gates.

The demo is the CPU experiment (configs/experiments/cpu.toml) cut to fit ~10 minutes on 2
cores: one training seed per arm, a shorter budget, smaller evaluation sets, no toy tasks.
With one seed no claim can be tested, and at this budget the validity gates are expected to
fail (results/calibration-demo-wsd: the demo's model with 3 seeds took 21 minutes and still
failed gates 1 and 3); the report opens by saying so and sets the verdicts of the committed
CPU comparison beside its own. Everything is cached: the prepared
corpus under runs/data, the runs and measurements under the demo folder, so a second call
only redoes what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .checkpoint import load_model, output_dir, read_metrics
from .devices import resolve_device
from .eval.render import markdown_table, mean_train_tokens_per_s, plot_loss_curves
from .infer import SamplingConfig, generate_text
from .study import Study, reproduce

DEMO_STEPS = 600
PROMPTS = ["The President said that", "Fellow citizens of the Senate", "To be, or not to be"]


def demo_study(steps: int = DEMO_STEPS, device: str = "auto") -> Study:
    every = max(1, steps // 12)
    return Study.from_dict({
        "model": {"preset": "tiny", "decoder_fraction": 0.5},
        "data": {"dir": "runs/data/prose-bpe1024", "corpus": "builtin:prose", "tokenizer": "bpe:1024"},
        "train": {"batch_size": 16, "max_steps": steps, "lr": 2e-3, "min_lr": 2e-4,
                  "warmup_steps": min(50, steps // 10), "eval_interval": every * 2, "eval_batches": 10,
                  "ckpt_interval": every, "keep_every": every, "log_interval": max(1, steps // 60), "device": device},
        "experiment": {"seeds": [0], "workers": 2},
        "arms": {"gpt": {"train": {"model": "gpt"}}, "ftp": {"train": {"model": "ftp"}}},
        # E1-E5 at demo scale, a few minutes on 2 cores: E5 without the Brown set (it needs npm), one random-init floor.
        "suite": {"eval_batches": 6, "trajectory_batches": 2, "floor_seeds": [0],
                  "future_bag": {"windows": 128}, "smoothness": {"per_document": 10, "min_windows": 60},
                  "coherence": {"prompts": 30, "new_tokens": 48},
                  "classification": {"datasets": ["bbc", "rotten_tomatoes"], "limit": 1000, "pools": ["mean"]}},
    })


COMMITTED = Path(__file__).resolve().parents[2] / "results" / "paper-cpu"  # in a clone of the repository


def committed_verdicts(folder: Path = COMMITTED) -> list[str]:
    """What the demo cannot show, and the committed CPU comparison's verdicts beside it (when the clone has them)."""
    lines = ["## What this demo can and cannot show", "",
             "It trains one seed per model in about ten minutes: enough to see both objectives train, generate and "
             "be measured by every instrument and gate, not to decide a claim (a verdict needs several seeds; this "
             "project stands by five). The budget does not reach the validity gates either: the demo's model with "
             "three seeds took 21 minutes and still failed them (`results/calibration-demo-wsd`)."]
    if not (folder / "results.json").is_file():
        return lines + [""]
    from .eval.render import read_results

    results = read_results(folder)
    rows = [[r["label"], r["arm"], r["verdict"],
             f"{r['test']['diff']:+.3f} [{r['test']['ci95'][0]:+.3f}, {r['test']['ci95'][1]:+.3f}]"]
            for r in results["rows"]]
    return lines + ["", f"The committed CPU comparison (`results/{folder.name}`, {len(results['seeds'])} seeds, an older "
                    "protocol: matched pairs at mixed schedule positions, t-test verdicts) found:", "",
                    markdown_table(["claim", "arm", "verdict", "arm − baseline [95% CI]"], rows), ""]


def _samples(model) -> list[str]:
    device = model.head_weight.device
    return [generate_text(model, prompt, max_new_tokens=48, sampling=SamplingConfig(temperature=0.8, top_k=40),
                          generator=torch.Generator(device=device).manual_seed(i))
            for i, prompt in enumerate(PROMPTS)]


def run_demo(out_dir: str | Path = "runs/demo", steps: int | None = None, device: str = "auto") -> Path:
    out_dir = output_dir(out_dir, "demo folder")
    study = demo_study(steps or DEMO_STEPS, device)
    started = time.perf_counter()
    paper = reproduce(study, out_dir, device)
    seconds = time.perf_counter() - started
    runs = {arm: out_dir / arm / "seed-0" for arm in study.arms}
    rows, samples = [], {}
    for arm, run in runs.items():
        train_logs = [r for r in read_metrics(run) if r["split"] == "train"]
        rows.append([arm, round(mean_train_tokens_per_s(run)), train_logs[-1]["tokens"] if train_logs else 0])
        samples[arm] = _samples(load_model(run, resolve_device(device)))
    plot_loss_curves(runs, out_dir / "loss_curves.png")
    lines = [
        "# futuretoken demo: tiny FTP vs tiny GPT", "",
        *committed_verdicts(),
        f"Built-in prose corpus, byte-level BPE (1024), `tiny` preset, {study.run.train.max_steps} steps of "
        f"16 x 128 tokens for each model, same data order, one training seed. Wall time of this call: "
        f"{seconds / 60:.1f} min.", "",
        markdown_table(["model", "training tokens/s (CPU)", "tokens seen"], rows), "",
        "![loss curves](loss_curves.png)", "",
        "## Samples (temperature 0.8, top-k 40, same seed per prompt)",
    ]
    for i, prompt in enumerate(PROMPTS):
        lines += ["", f"**Prompt:** {prompt}", ""] + [f"- {arm}: {samples[arm][i]!r}" for arm in runs]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n\n" + _nest(paper.read_text(), "paper/"))
    return report


def _nest(markdown: str, folder: str) -> str:
    """The comparison report as a section of this one (its images live in a sub-folder)."""
    markdown = markdown.replace("\n## ", "\n### ").replace("# Paper claims", "## Paper claims", 1)
    return markdown.replace("](claims.png)", f"]({folder}claims.png)").replace("](training.png)",
                                                                              f"]({folder}training.png)")
