"""The paper's experiments on trained runs: `futuretoken eval RUN` (one model) and
`futuretoken compare RUN_FTP RUN_GPT` (a matched pair, side by side, with verdicts).

E1 next-token loss | E2 future-token loss by distance (own decoder + a shared probe) |
E3 smoothness | E4 topic coherence | E5 topic / sentiment probes. E6 (code) and E7
(planning) train their own models on generated data: see eval/countdown.py, eval/pathstar.py.
Every number carries its spread (std over folds, seeds or texts) and sample count.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import checkpoint_step, list_checkpoints, load_model, run_data_dir
from ..data import TokenShards, WindowSampler
from ..devices import resolve_device
from ..files import writable_dir
from ..model import training_flops_per_token
from ..train import evaluate
from .future_probe import train_future_probe
from .matched import pick_matched_pair
from .report import markdown_table, save_figure, subplots
from .smoothness import smoothness_stats


@dataclass
class SuiteSettings:
    eval_batches: int = 20  # E1: validation batches of 16 windows
    probe_steps: int = 200  # E2: training steps of the shared future probe
    smooth_windows: int = 64  # E3: held-out windows of block_size tokens
    labelled_limit: int | None = 500  # E5: texts per data set (stratified); None = all
    coherence_prompts: int = 8  # E4: openings of held-out documents
    coherence_seeds: tuple[int, ...] = (0, 1, 2)
    coherence_new_tokens: int = 64
    coherence_window: int = 16  # continuation tokens per judged window
    seed: int = 0


def next_token_loss(model, val_tokens, batches: int) -> float:
    sampler = WindowSampler(val_tokens, model.config.block_size + model.horizon, 16, seed=1234)
    return evaluate(model, sampler, batches, model.head_weight.device)["next_token_loss"]


def checkpoint_losses(run_dir: Path, batches: int, device: torch.device | str = "cpu") -> dict[int, float]:
    """Validation next-token loss of every kept checkpoint of a run, on the same batches."""
    val = TokenShards(run_data_dir(run_dir), "val").tokens
    return {checkpoint_step(ckpt): next_token_loss(load_model(ckpt, device), val, batches)
            for ckpt in list_checkpoints(run_dir)}


def held_out_prompts(data_dir: Path, tokenizer, n: int, tokens: int = 24) -> list[str]:
    """Openings of held-out documents (the validation split, cut at end-of-text tokens)."""
    shards = TokenShards(data_dir, "val")
    ids = np.asarray(shards.tokens[: 2_000_000])
    starts = [0] + (np.flatnonzero(ids == shards.eot_token) + 1).tolist()
    prompts = [tokenizer.decode(ids[s : s + tokens].tolist()) for s in starts if s + tokens < len(ids)]
    return prompts[:n]


def evaluate_model(model, data_dir: Path, settings: SuiteSettings, judge=None, with_floors: bool = True,
                   bag_of_words: bool = True) -> dict:
    """E1-E5 on one model (and the random-init floors of E3 and E5; the bag-of-words
    baseline of E5 on the same truncated texts, which a comparison needs only once)."""
    from .classification import classification_experiment, random_init_like
    from .coherence import coherence_experiment

    train_tokens, val_tokens = TokenShards(data_dir, "train").tokens, TokenShards(data_dir, "val").tokens
    cfg = model.config
    result: dict = {"model_type": model.model_type, "parameters": model.num_parameters(),
                    "train_flops_per_token": training_flops_per_token(cfg, model.model_type)}
    result["E1"] = {"next_token_loss": next_token_loss(model, val_tokens, settings.eval_batches),
                    "batches": settings.eval_batches}
    result["E1"]["perplexity"] = math.exp(result["E1"]["next_token_loss"])
    if model.model_type == "ftp":
        sampler = WindowSampler(val_tokens, cfg.block_size + model.horizon, 16, seed=1234)
        result["E2_own_decoder"] = evaluate(model, sampler, settings.eval_batches, model.head_weight.device)["per_distance"]
    result["E2_probe"] = train_future_probe(model, train_tokens, val_tokens, steps=settings.probe_steps,
                                            seed=settings.seed)
    windows = WindowSampler(val_tokens, cfg.block_size, settings.smooth_windows, seed=99).batch(0)
    result["E3"] = smoothness_stats(model, windows)
    prompts = held_out_prompts(data_dir, model.tokenizer, settings.coherence_prompts)
    result["E4"] = coherence_experiment(model, prompts, judge=judge, seeds=settings.coherence_seeds,
                                        max_new_tokens=settings.coherence_new_tokens, window=settings.coherence_window)
    result["E5"] = {ds: classification_experiment(model, dataset=ds, limit=settings.labelled_limit, seed=settings.seed,
                                                  bag_of_words=bag_of_words)
                    for ds in ("bbc", "rotten_tomatoes")}
    if with_floors:
        floor = random_init_like(model, settings.seed)
        result["floor_random_init"] = {
            "E3": smoothness_stats(floor, windows),
            "E5": {ds: classification_experiment(floor, dataset=ds, limit=settings.labelled_limit, seed=settings.seed,
                                                 bag_of_words=False)
                   for ds in ("bbc", "rotten_tomatoes")},
        }
    return result


def _verdict(diff: float, spread: float, higher_is_better: bool = True) -> str:
    """Reproduced when FTP beats GPT by more than two standard errors of the difference."""
    diff = diff if higher_is_better else -diff
    if diff > 2 * spread:
        return "reproduced"
    if diff < -2 * spread:
        return "not reproduced"
    return "inconclusive at this scale"


def _probe_mean(e5: dict, pool: str = "mean") -> tuple[float, float, int]:
    acc = e5["probe"][pool]
    return acc["mean"], acc["std"], len(acc["folds"])


def verdicts(ftp: dict, gpt: dict) -> dict[str, dict]:
    out = {}
    f3, g3 = ftp["E3"]["centred"], gpt["E3"]["centred"]
    out["smoothness (centred adjacent cosine)"] = {
        "ftp": f3["mean"], "gpt": g3["mean"], "spread": math.hypot(f3["se"], g3["se"]),
        "verdict": _verdict(f3["mean"] - g3["mean"], math.hypot(f3["se"], g3["se"]))}
    f4, g4 = ftp["E4"], gpt["E4"]
    se4 = math.hypot(f4["std"], g4["std"]) / math.sqrt(max(1, len(f4["per_seed"])))
    out["topic coherence (MiniLM cosine to prompt)"] = {
        "ftp": f4["mean"], "gpt": g4["mean"], "spread": se4, "verdict": _verdict(f4["mean"] - g4["mean"], se4)}
    for ds in ("bbc", "rotten_tomatoes"):
        fm, fs, k = _probe_mean(ftp["E5"][ds])
        gm, gs, _ = _probe_mean(gpt["E5"][ds])
        se = math.hypot(fs, gs) / math.sqrt(k)
        out[f"classification {ds} (probe accuracy, mean pool)"] = {
            "ftp": fm, "gpt": gm, "spread": se, "verdict": _verdict(fm - gm, se)}
    return out


def _plots(ftp: dict, gpt: dict, out_dir: Path) -> Path:
    fig, axes = subplots(4, 20)
    for name, r in (("GPT", gpt), ("FTP", ftp)):
        axes[0].plot(r["E3"]["centred"]["first_text"], label=name)
        hist = np.array(r["E3"]["centred"]["histogram"])
        axes[1].stairs(hist / hist.sum(), np.linspace(-1, 1, len(hist) + 1), label=name)
        axes[2].plot(range(1, len(r["E2_probe"]["per_distance"]) + 1), r["E2_probe"]["per_distance"], "o-",
                     label=f"{name} (shared probe)")
        axes[3].plot(r["E4"]["by_window"], "o-", label=name)
    axes[2].plot(range(1, len(ftp["E2_own_decoder"]) + 1), ftp["E2_own_decoder"], "s--", label="FTP (own decoder)")
    axes[0].set(title="E3: centred cos(h_t, h_t+1) along a held-out text", xlabel="position")
    axes[1].set(title="E3: distribution of centred adjacent cosine", xlabel="cosine")
    axes[2].set(title="E2: validation loss by distance ahead", xlabel="k", ylabel="nats")
    axes[3].set(title="E4: prompt-continuation similarity", xlabel="continuation window", ylabel="MiniLM cosine")
    return save_figure(fig, axes, out_dir / "experiments.png", dpi=100)


def render_compare(results: dict) -> str:
    ftp, gpt, pair = results["ftp"], results["gpt"], results["matched_pair"]
    floor_f, floor_g = ftp["floor_random_init"], gpt["floor_random_init"]
    rows = [
        ["checkpoint step", pair["step_ftp"], pair["step_gpt"], ""],
        ["parameters", ftp["parameters"], gpt["parameters"], ""],
        ["training FLOPs / token", f"{ftp['train_flops_per_token']:.3g}", f"{gpt['train_flops_per_token']:.3g}", ""],
        ["E1 next-token loss", ftp["E1"]["next_token_loss"], gpt["E1"]["next_token_loss"], ""],
        ["E1 perplexity", ftp["E1"]["perplexity"], gpt["E1"]["perplexity"], ""],
        ["E3 adjacent cosine, raw", ftp["E3"]["raw"]["mean"], gpt["E3"]["raw"]["mean"],
         f"{floor_f['E3']['raw']['mean']:.3f} / {floor_g['E3']['raw']['mean']:.3f}"],
        ["E3 adjacent cosine, centred", ftp["E3"]["centred"]["mean"], gpt["E3"]["centred"]["mean"],
         f"{floor_f['E3']['centred']['mean']:.3f} / {floor_g['E3']['centred']['mean']:.3f}"],
        ["E4 coherence (mean over windows, seeds)", ftp["E4"]["mean"], gpt["E4"]["mean"], ""],
    ]
    for ds in ("bbc", "rotten_tomatoes"):
        for pool in ("mean", "last"):
            f, g = ftp["E5"][ds]["probe"][pool], gpt["E5"][ds]["probe"][pool]
            ff, fg = floor_f["E5"][ds]["probe"][pool], floor_g["E5"][ds]["probe"][pool]
            rows.append([f"E5 {ds} accuracy ({pool} pool)", f"{f['mean']:.3f} ± {f['std']:.3f}",
                         f"{g['mean']:.3f} ± {g['std']:.3f}", f"{ff['mean']:.3f} / {fg['mean']:.3f}"])
        bow = ftp["E5"][ds].get("bag_of_words")
        if bow:
            rows.append([f"E5 {ds} bag-of-words baseline (same text)", f"{bow['mean']:.3f} ± {bow['std']:.3f}", "",
                         f"chance {ftp['E5'][ds]['chance']:.3f}"])
    per_k = lambda r: ", ".join(f"{v:.3f}" for v in r)  # noqa: E731
    lines = [
        "# FTP vs GPT at matched next-token loss", "",
        f"Matched pair: FTP step {pair['step_ftp']} (val loss {pair['loss_ftp']:.4f}) and GPT step "
        f"{pair['step_gpt']} (val loss {pair['loss_gpt']:.4f}); gap {pair['gap']:.4f} nats. Settings: "
        f"`{json.dumps(results['settings'])}`.", "",
        markdown_table(["", "FTP", "GPT", "random-init floor (FTP / GPT shape)"], rows), "",
        f"E2, loss by distance k = 1..N with the shared probe decoder on frozen h_t "
        f"({ftp['E2_probe']['probe_steps']} steps): FTP {per_k(ftp['E2_probe']['per_distance'])}; "
        f"GPT {per_k(gpt['E2_probe']['per_distance'])}. FTP's own decoder: {per_k(ftp['E2_own_decoder'])}.", "",
        "E3 spread: std over windows; E4: over seeds; E5: over 5 folds (± is the std).", "",
        "## The paper's claims", "",
        markdown_table(["claim", "FTP", "GPT", "2 SE of the difference", "verdict"],
                       [[k, v["ftp"], v["gpt"], 2 * v["spread"], v["verdict"]] for k, v in results["verdicts"].items()]),
        "", "![experiments](experiments.png)", "",
    ]
    return "\n".join(lines)


def compare(run_ftp: str | Path, run_gpt: str | Path, out_dir: str | Path, settings: SuiteSettings | None = None,
            judge=None, device: torch.device | str = "auto") -> Path:
    """Pick the matched checkpoint pair, run E1-E5 on both (+ floors), write report.md, results.json, plots."""
    settings = settings or SuiteSettings()
    device = resolve_device(device)
    run_ftp, run_gpt, out_dir = Path(run_ftp), Path(run_gpt), writable_dir(out_dir, "--out folder")
    losses_f = checkpoint_losses(run_ftp, settings.eval_batches, device)
    losses_g = checkpoint_losses(run_gpt, settings.eval_batches, device)
    pair = pick_matched_pair(losses_f, losses_g)
    models = {"ftp": load_model(run_ftp / "checkpoints" / f"step-{pair.step_a:07d}", device),
              "gpt": load_model(run_gpt / "checkpoints" / f"step-{pair.step_b:07d}", device)}
    results = {name: evaluate_model(m, run_data_dir(run), settings, judge, bag_of_words=name == "ftp")
               for (name, m), run in zip(models.items(), (run_ftp, run_gpt))}
    results["matched_pair"] = {"step_ftp": pair.step_a, "step_gpt": pair.step_b, "loss_ftp": pair.loss_a,
                               "loss_gpt": pair.loss_b, "gap": pair.gap,
                               "candidates": {"ftp": losses_f, "gpt": losses_g}}
    results["settings"] = asdict(settings)
    results["verdicts"] = verdicts(results["ftp"], results["gpt"])
    _plots(results["ftp"], results["gpt"], out_dir)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    report = out_dir / "report.md"
    report.write_text(render_compare(results))
    return report


def evaluate_run(run: str | Path, out_dir: str | Path, settings: SuiteSettings | None = None, judge=None,
                 device: torch.device | str = "auto") -> Path:
    """`futuretoken eval RUN --suite paper`: E1-E5 on one run's newest checkpoint -> results.json."""
    settings = settings or SuiteSettings()
    out = writable_dir(out_dir, "--out folder")  # before the work, not after it
    model = load_model(run, device)
    result = evaluate_model(model, run_data_dir(run), settings, judge)
    (out / "results.json").write_text(json.dumps({"run": str(run), "settings": asdict(settings), **result}, indent=2))
    return out / "results.json"
