"""Reports: reading metrics, markdown tables, plots, and the comparison report of study/compare.py."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import read_metrics


def mean_train_tokens_per_s(run_dir: str | Path) -> float:
    """Average of the training throughput the trainer logged (0 when nothing was logged)."""
    logs = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    return sum(r["tokens_per_s"] for r in logs) / max(1, len(logs))


def subplots(ncols: int, width: float, nrows: int = 1, height: float = 4):
    """A grid of axes on a headless backend (reports are written on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=(width, height * nrows))


def save_figure(fig, axes, path: str | Path, dpi: int = 110, shared_legend: bool = False) -> Path:
    """Grid and legend on every axis (at its emptiest place), or one legend below the grid for axes that
    all show the same entries; then write the PNG and free the figure."""
    import matplotlib.pyplot as plt

    for ax in axes:
        ax.grid(alpha=0.3)
        if not shared_legend and ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", framealpha=0.85, fontsize=8)
    if shared_legend:
        entries = {}
        for ax in axes:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
        fig.legend(list(entries.values()), list(entries), loc="lower center", ncol=len(entries), frameon=False)
        fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend below the grid
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return Path(path)


def plot_loss_curves(runs: dict[str, str | Path], out_path: str | Path) -> Path:
    """Training and validation next-token loss of several runs against tokens seen."""
    fig, axes = subplots(2, 11)
    for name, run_dir in runs.items():
        records = read_metrics(run_dir)
        train = [r for r in records if r["split"] == "train"]
        val = [r for r in records if r["split"] == "val"]
        axes[0].plot([r["tokens"] for r in train], [r["per_distance"][0] for r in train], label=f"{name} next-token")
        if len(train) and len(train[0]["per_distance"]) > 1:
            axes[0].plot([r["tokens"] for r in train], [r["loss"] for r in train], "--", label=f"{name} FTP objective")
        axes[1].plot([r["tokens"] for r in val], [r["next_token_loss"] for r in val], "o-", label=name)
    axes[0].set(title="training loss", xlabel="tokens", ylabel="cross-entropy (nats)")
    axes[1].set(title="validation next-token loss", xlabel="tokens", ylabel="cross-entropy (nats)")
    return save_figure(fig, axes, out_path)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --- the comparison report (study/compare.py) ----------------------------------------------------
RESULTS_SCHEMA = 2  # 2: an arm and its baseline are "arm"/"baseline" in pairs and rows (1: "ftp"/"gpt")


def upgrade_results(results: dict) -> dict:
    """A results.json of any schema in today's: older comparisons' folders still render."""
    if results.get("schema", 1) == 1:
        for pairs in results["pairs"].values():
            for pair in pairs:
                pair["arm"], pair["baseline"] = pair.pop("ftp"), pair.pop("gpt")
        for row in results["rows"]:
            row["arm_values"], row["baseline_values"] = row.pop("ftp"), row.pop("gpt")
        results["schema"] = 2
    return results


def read_results(folder: str | Path) -> dict:
    """FOLDER/results.json of a comparison, in today's schema."""
    return upgrade_results(json.loads((Path(folder) / "results.json").read_text()))


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _p(x: float) -> str:
    if x is None or math.isnan(x):
        return "-"
    return f"{x:.3f}" if x >= 0.001 else f"{x:.1e}"


def _mean_se(values) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return _fmt(float(v.mean())) if len(v) else "-"
    return f"{v.mean():.3f} ± {v.std(ddof=1) / math.sqrt(len(v)):.3f}"


def gate_table(results: dict) -> str:
    rows = []
    for arm, pairs in results["pairs"].items():
        for seed, pair in zip(results["matched"][arm], pairs):  # the arm's own seeds (maybe fewer)
            g = pair["gates"]
            su = g.get("state_use")
            rows.append([
                arm, seed,
                f"{_fmt(g['ngram']['loss'][0])} / {_fmt(g['ngram']['loss'][1])} (< {_fmt(g['ngram']['needed_below'])})",
                "pass" if g["ngram"]["passed"] else "FAIL",
                (f"{_fmt(su['increase']['mean_state'])} / {_fmt(su['increase']['shuffled_state'])} "
                 f"(low {_fmt(min(su['lower_95'].values()))} ≥ {_fmt(su['needed'])})") if su else "n/a",
                ("pass" if su["passed"] else "FAIL") if su else "-",
                f"{_fmt(g['matched']['gap'])} (|gap| ≤ {_fmt(g['matched']['tolerance'])})",
                "pass" if g["matched"]["passed"] else "FAIL",
            ])
    return markdown_table(["arm", "seed", "gate 1: next-token loss arm / baseline", "", "gate 2: loss rise, mean h / "
                           "shuffled h", "", "gate 3: matched gap on report half", ""], rows)


def claims_table(rows: list[dict], baseline: str) -> str:
    """One row per claim, one column per arm: the baseline's mean ± SE over seeds, then for every other
    arm its mean ± SE, the paired difference from the baseline [95% CI], its p-values and its verdict.
    Each arm is compared with the baseline's checkpoint matched to it, so the baseline column lists
    its value per arm when those checkpoints differ."""
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    claims: dict[str, dict[str, dict]] = {}
    for r in rows:
        claims.setdefault(r["label"] + ("" if r["primary"] else " (secondary)"), {})[r["arm"]] = r
    body = []
    for label, by_arm in claims.items():
        base = {arm: _mean_se(r["baseline_values"]) for arm, r in by_arm.items()}
        if len(set(base.values())) == 1:
            base_cell = next(iter(base.values()))
        else:
            base_cell = "<br>".join(f"{v} (vs {arm})" for arm, v in base.items())
        cells = []
        for arm in arms:
            r = by_arm.get(arm)
            if r is None:
                cells.append("-")
                continue
            t = r["test"]
            cells.append(f"{_mean_se(r['arm_values'])}<br>Δ {_fmt(t['diff'])} [{_fmt(t['ci95'][0])}, {_fmt(t['ci95'][1])}]"
                         f"<br>{_p_values(r)}, TOST {_p(r['p_tost'])} (±{r['margin']:g})"
                         f"<br>**{r['verdict']}**" + (f": {'; '.join(r['why_invalid'])}" if r["why_invalid"] else ""))
        body.append([label, base_cell, *cells])
    return markdown_table(["claim", f"{baseline} (mean ± SE)", *arms], body)


def _schedule_note(results: dict) -> list[str]:
    """How the compared checkpoints sit in their schedules (results from before this was recorded: nothing)."""
    if results.get("schedule") == "wsd":
        return ["Every compared checkpoint is annealed: the runs use a warmup-stable-decay schedule, and a model "
                "is a run's end or the end of a cooldown (a decay branch from a stable checkpoint, exactly the run "
                "that would have been that long); the weaker run's end fixes the level and the other run's annealed "
                "checkpoint nearest to it is its match.", ""]
    if results.get("schedule") == "cosine":
        return ["The runs use a cosine schedule: a kept checkpoint before the end is not annealed, so a pair may "
                "compare models at different points of their schedules (train.schedule = 'wsd' removes this).", ""]
    return []


def _p_values(row: dict) -> str:
    """The row's p-values as its results hold them: older results have no exact test."""
    t = row["test"]
    if "exact" not in row:
        return f"p {_p(t['p'])}, Holm {_p(row['p_holm'])}"
    exact = f"exact {_p(row['exact']['p'])}"
    if row["primary"]:
        return f"p {_p(t['p'])} (t), {exact}, Holm {_p(row['p_holm'])}"
    return f"raw p {_p(t['p'])} (t), {exact}"


VERDICT_MEANING = {
    "reproduced": "the arm beats the baseline and the 95% CI clears the margin",
    "not reproduced": "the baseline beats the arm, the CI clearing the margin",
    "equivalent": "the difference lies within ± the margin (TOST)",
    "inconclusive": "the seeds do not settle it at this sample size",
    "invalid at this scale": "a validity gate failed, so the models are not fit to test the claim",
}


def summary(results: dict) -> list[str]:
    """What this run shows, in plain words: per arm, which claims were decided and why the rest were not."""
    rows, base = results["rows"], results["baseline"]
    lines = ["## What this run shows", ""]
    if "schedule" not in results:
        lines += ["These results predate the current protocol (matched pairs at mixed schedule positions, verdicts "
                  "from the t-test alone, margins not fixed in the experiment file): they are the record of that "
                  "run, not verdicts this project stands by now.", ""]
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        decided = [r for r in mine if r["verdict"] in ("reproduced", "not reproduced", "equivalent")]
        invalid = [r for r in mine if r["verdict"] == "invalid at this scale"]
        parts = [f"**{r['label'].split(' (')[0]}**: {r['verdict']} (Δ {_fmt(r['test']['diff'])} "
                 f"[{_fmt(r['test']['ci95'][0])}, {_fmt(r['test']['ci95'][1])}])" for r in decided]
        n = len(results["matched"].get(arm, results["seeds"]))
        line = f"- `{arm}` vs `{base}`, {n} seed(s): "
        line += ("decided " + "; ".join(parts) if parts else "no claim decided") + "."
        if invalid:
            reasons = sorted({w for r in invalid for w in r["why_invalid"]})
            line += f" {len(invalid)} of {len(mine)} claims are invalid at this scale ({'; '.join(reasons[:3])}"
            line += f"; and {len(reasons) - 3} more)." if len(reasons) > 3 else ")."
        lines.append(line)
    if len(results["seeds"]) < 2:
        lines.append(f"- With {len(results['seeds'])} training seed no claim can be tested: the verdicts need at least two (five for "
                     "a verdict this project stands by).")
    lines += ["", "Verdicts: " + "; ".join(f"*{v}*: {m}" for v, m in VERDICT_MEANING.items()) + ".", ""]
    if any(r["claim"].startswith(("E6", "E7")) for r in rows):
        lines += ["E6 (countdown as code) and E7 (path-star) are this project's tasks: the paper's coding problem "
                  "is not public.", ""]
    return lines


def models_section(results: dict) -> list[str]:
    """The exported compared models (weights only, loadable with ft.load), when the comparison wrote them."""
    models = results.get("models")
    if not models:
        return []
    return ["", "## Models", "", "The compared checkpoints of each arm's first seed, weights and tokenizer only, beside "
            "this report: `futuretoken.load(\"models/NAME\")` loads one.", "",
            markdown_table(["models/NAME", "what it is"], [[k, v] for k, v in models.items()])]


def margins_table(results: dict) -> list[str]:
    """Each claim's margin and why it has that size (results from before margins were recorded: nothing)."""
    margins = results.get("margins")
    if not margins:
        return []
    return ["Margins (the minimal effect a verdict needs, and the equivalence bound), fixed before the run:", "",
            markdown_table(["claim", "margin", "why"], [[k, f"{m['value']:g}", m["reason"]] for k, m in margins.items()]),
            ""]


def item_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if not r.get("items"):
            continue
        tests = r["items"]
        wins = [t.get("a_only", t.get("a_higher")) for t in tests]
        losses = [t.get("b_only", t.get("b_higher")) for t in tests]
        body.append([r["label"], r["arm"], ", ".join(f"{w}/{lose}" for w, lose in zip(wins, losses)),
                     ", ".join(_p(t["p"]) for t in tests)])
    if not body:
        return "(no item-level outcomes)"
    return markdown_table(["claim", "arm", "items better for arm / baseline, per seed", "exact p, per seed"], body)


def render_report(results: dict) -> str:
    base, seeds = results["baseline"], results["seeds"]
    arms = results["arms"]
    arm_rows = [[name, a["model_type"], 1 if a["model_type"] == "gpt" else a["model"]["horizon"],
                 a["model"].get("decoder_start", "-") if a["model_type"] == "ftp" else "-",
                 a["train"]["max_steps"], f"{a['train_flops_per_token']:.3g}"] for name, a in arms.items()]
    matched = [[arm, seed, m["step"], m["baseline_step"], _fmt(m["selection_loss"], 4), _fmt(m["baseline_selection_loss"], 4)]
               + ([m["schedule"], m["baseline_schedule"], f"{m['tokens']:,}", f"{m['baseline_tokens']:,}",
                   f"{m['train_flops']:.3g}", f"{m['baseline_train_flops']:.3g}"] if "schedule" in m else [])
               for arm, by_seed in results["matched"].items() for seed, m in by_seed.items()]
    where = (["arm schedule", f"{base} schedule", "arm tokens", f"{base} tokens", "arm FLOPs", f"{base} FLOPs"]
             if matched and len(matched[0]) > 6 else [])
    lines = [
        "# Paper claims at matched next-token loss", "",
        *summary(results),
        f"Arms compared with the baseline `{base}`, {len(seeds)} training seed(s) each ({', '.join(map(str, seeds))}); "
        "seed i of every arm shares the init seed, the data order and every evaluation item. The unit of replication "
        "is the training seed: each claim is a paired t-test over seeds, Holm-corrected over the primary claims, with "
        "a TOST equivalence test against the stated margin. A claim whose gates fail is *invalid at this scale*.", "",
        markdown_table(["arm", "model", "tokens predicted", "decoder start", "steps", "training FLOPs / token"],
                       arm_rows), "",
        *fewer_seeds(results), *pieces_note(results),
        "## Validity gates", "",
        f"Count-based baselines on the report windows: unigram {_fmt(results['ngram']['unigram'])}, bigram "
        f"(interpolated Kneser-Ney) {_fmt(results['ngram']['bigram'])} nats.", "",
        gate_table(results), "",
        "Matched pairs (chosen on the selection half of the validation documents, reported on the other half):", "",
        markdown_table(["arm", "seed", "arm step", f"{base} step", "arm selection loss", f"{base} selection loss",
                        *where], matched), "",
        *_schedule_note(results),
        "## Claims", "",
        f"Per claim and arm: mean ± SE over the {len(seeds)} seed(s), the paired difference from the matched "
        f"`{base}` checkpoints [95% CI], the paired t-test's p, Holm's adjusted p and the TOST equivalence p "
        "(margin), and the verdict.", "",
        claims_table(results["rows"], base), "",
        *margins_table(results),
        "Secondary, item-level exact tests (McNemar for pass/fail items, sign test for scores):", "",
        item_table(results["rows"]), "",
        "## Controls", "",
    ]
    lines += controls(results)
    lines += models_section(results)
    lines += ["", "![claims](claims.png)", "", "![training](training.png)", ""]
    return "\n".join(lines)


def fewer_seeds(results: dict) -> list[str]:
    """Arms trained with fewer seeds than the baseline (a costly arm), each paired on its own seeds."""
    fewer = {arm: sorted(int(s) for s in by_seed) for arm, by_seed in results["matched"].items()
             if len(by_seed) < len(results["seeds"])}
    if not fewer:
        return []
    return ["Fewer seeds (paired with the baseline's runs of the same seeds): " + "; ".join(
        f"`{arm}` {', '.join(map(str, seeds))}" for arm, seeds in fewer.items()) + ".", ""]


def pieces_note(results: dict) -> list[str]:
    """A study run in pieces (reproduce --seeds): which, and the wall time of each phase of each."""
    pieces = results.get("pieces")
    if not pieces:
        return []
    parts = []
    for name, timing in pieces.items():
        phases = ", ".join(f"{k.removesuffix('_s')} {v / 60:.0f} min" for k, v in timing.items() if k.endswith("_s"))
        cores = f" on {timing['cpu_count']} CPU cores" if "cpu_count" in timing else ""
        parts.append(f"{name} ({phases}{cores})" if phases else name)
    return [f"Run in {len(pieces)} pieces of seeds (`reproduce --seeds`), merged here: {'; '.join(parts)}.", ""]


def controls(results: dict) -> list[str]:
    out = [f"- E2 control: the current token alone explains {_fmt(results['token_r2'])}% of the future bag's variance "
           "(held out); a state that holds more than its own token must beat it."]
    for arm, pairs in results["pairs"].items():
        for label, side in ((arm, "arm"), (f"{results['baseline']} (matched to {arm})", "baseline")):
            e3 = [p[side]["E3"] for p in pairs]
            out.append(f"- E3 {label}: adjacent {_mean_se([e['summary']['adjacent']['mean'] for e in e3])}, "
                       f"cross-document {_mean_se([e['summary']['cross_document']['mean'] for e in e3])}, "
                       f"raw (uncentred) {_mean_se([e['raw_adjacent'] for e in e3])}; "
                       f"E2 R² {_mean_se([p[side]['E2']['r2'] for p in pairs])}%")
    out += coherence_controls(results) + task_controls(results)
    for arm, floors in results.get("floors", {}).items():
        if floors:
            out.append(f"- random-init floor ({arm}'s shape, {len(floors)} init seeds): E3 excess "
                       f"{_mean_se([f['E3']['summary']['excess']['mean'] for f in floors])}, E2 R² "
                       f"{_mean_se([f['E2']['r2'] for f in floors])}%")
    return out


E4_COLUMNS = ("cosine", "drift", "copy_3gram", "longest_copy", "distinct_1", "distinct_2")


def coherence_controls(results: dict) -> list[str]:
    """E4 placed between its references (another document's continuation, the real one, word salad), with
    the copy and repetition controls: a model that scores by copying its prompt shows here."""
    rows = []
    calibration = results.get("coherence_calibration")
    if calibration:
        rows += [[name, *(_fmt(calibration[key]["mean"][c]) for c in E4_COLUMNS)]
                 for name, key in (("real continuation (ceiling)", "ceiling"),
                                   ("another document's continuation (floor)", "floor"), ("word salad", "word_salad"))]
    for arm, pairs in results["pairs"].items():
        for label, side in ((arm, "arm"), (f"{results['baseline']} (matched to {arm})", "baseline")):
            e4 = [p[side]["E4"]["mean"] for p in pairs if "cosine" in p[side].get("E4", {}).get("mean", {})]
            if e4:
                rows.append([label, *(_mean_se([m[c] for m in e4]) for c in E4_COLUMNS)])
    if not rows:
        return []
    return ["", "E4 references and controls (means over prompts; models: mean ± SE over seeds). Drift is the slope "
            "of the cosine over continuation windows; copy is the share of prompt 3-grams repeated and the longest "
            "copied run (words); distinct-n measures repetition:", "",
            markdown_table(["text", "cosine", "drift", "copy 3-gram", "longest copy", "distinct-1", "distinct-2"], rows),
            ""]


def task_controls(results: dict) -> list[str]:
    """The toy tasks at equal training compute: each arm's kept checkpoint closest to the baseline's FLOPs."""
    out = []
    for task, result in (results.get("tasks") or {}).items():
        for arm, at in result.get("equal_compute", {}).items():
            scores = ", ".join(f"{setting} {_mean_se(v)}" for setting, v in at.items() if setting != "steps")
            out.append(f"- {task} at equal training compute: {arm} at step(s) {', '.join(map(str, at['steps']))} "
                       f"of {result['max_steps']} (the baseline's FLOPs at its last step): pass@1 {scores}.")
    return out


def plot_comparison(results: dict, out_dir: Path) -> None:
    """claims.png: each claim's per-seed paired differences with the 95% CI; training.png: loss curves
    with the matched checkpoints, and gate 2 (loss rise when h_t is replaced) along training."""
    rows = results["rows"]
    if rows:
        ncols = min(4, len(rows))
        fig, axes = subplots(ncols, 3.6 * ncols, nrows=math.ceil(len(rows) / ncols), height=3.4)
        axes = np.atleast_1d(axes).ravel()
        for ax in axes[len(rows):]:
            ax.set_visible(False)
        axes = axes[: len(rows)]
        for ax, r in zip(axes, rows):
            d = r["test"]["diffs"]
            ax.axhline(0, color="grey", lw=0.8)
            ax.axhspan(-r["margin"], r["margin"], color="grey", alpha=0.15, label="equivalence margin")
            ax.plot(np.zeros(len(d)), d, "o", label="seeds")
            lo, hi = r["test"]["ci95"]
            if not math.isnan(lo):
                ax.errorbar([0.3], [r["test"]["diff"]], yerr=[[r["test"]["diff"] - lo], [hi - r["test"]["diff"]]],
                            fmt="s", capsize=4, label="mean, 95% CI")
            title = textwrap.fill(f"{r['label'].split(' (')[0]} ({r['arm']})", 44)
            ax.set(title=f"{title}\n{r['verdict']}", xticks=[], ylabel="arm − baseline", xlim=(-0.3, 0.6))
            ax.title.set_fontsize(8)
        save_figure(fig, axes, out_dir / "claims.png", dpi=90, shared_legend=True)
    fig, axes = subplots(2, 12)
    for i, (arm, by_seed) in enumerate(results["curves"].items()):
        color = f"C{i}"
        for j, (seed, c) in enumerate(by_seed.items()):
            axes[0].plot(c["checkpoints"], c["selection_loss"], "-", color=color, alpha=0.7,
                         label=arm if j == 0 else None)
    for arm, by_seed in results["matched"].items():
        for seed, m in by_seed.items():
            axes[0].plot([m["step"]], [m["selection_loss"]], "k^", ms=5)
            axes[0].plot([m["baseline_step"]], [m["baseline_selection_loss"]], "kv", ms=5)
    for k, v in results["ngram"].items():
        axes[0].axhline(v, ls=":", color="grey")
        # named beside the right edge, in data units on y: not over the tick labels or the curves
        axes[0].text(1.01, v, k, fontsize=7, va="center", transform=axes[0].get_yaxis_transform(), clip_on=False)
    axes[0].set(title="next-token loss, selection half (▲▼ matched pair)", xlabel="step", ylabel="nats")
    for i, (arm, by_seed) in enumerate(results["state_use_trajectory"].items()):
        for j, (seed, tr) in enumerate(by_seed.items()):
            axes[1].plot(tr["steps"], [v["mean"] for v in tr["shuffled_state"]], "-", color=f"C{i}",
                         label=f"{arm}, shuffled h" if j == 0 else None)
            axes[1].plot(tr["steps"], [v["mean"] for v in tr["mean_state"]], "--", color=f"C{i}",
                         label=f"{arm}, mean h" if j == 0 else None)
    axes[1].axhline(results["gates"]["state_use_margin"], ls=":", color="grey")
    axes[1].set(title="gate 2: loss rise when h_t is replaced", xlabel="step", ylabel="nats")
    save_figure(fig, axes, out_dir / "training.png", dpi=90)
