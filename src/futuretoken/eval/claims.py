"""The validity gates the claims stand on, and the verdict rows of every (claim, arm).

A comparison has a baseline arm (GPT) and any number of other arms (FTP variants, MTP, MTP-seq),
each trained with the same seeds. For each arm and seed there is a matched checkpoint pair
(study/compare.py) with one measurement dict per model (eval/suite.py). From these:

Gates, per pair (a claim is *invalid at this scale* unless they pass for every seed):
1. n-gram: both models' next-token loss on the report windows lies below the count-based
   bigram and unigram losses by at least `ngram_margin` nats;
2. state use (FTP arms: their decoder could predict from x_t alone; GPT, MTP and MTP-seq predict
   the next token from h_t itself): replacing h_t by the mean state and by another position's
   state each raises the loss by at least `state_use_margin` nats (lower end of the 95% interval);
3. matching: the pair's next-token losses on the report windows (disjoint from the selection
   windows that chose it) differ by at most `matched_tolerance` nats.
Claims are declared by their experiments (eval/registry.py) and add their own conditions
(E5: both probes beat the majority class).

Verdicts: eval/stats.py (paired t over seeds, Holm over the primary claims, TOST margins).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import registry, stats
from .experiment import Claim, Experiment, Result


@dataclass
class GateSettings:
    ngram_margin: float = 0.05  # nats below the bigram (and unigram) loss
    state_use_margin: float = 0.05  # nats of loss increase when h_t is replaced (lower 95% bound)
    matched_tolerance: float = 0.03  # nats between the pair's next-token losses on report windows
    task_floor: float = 0.3  # E6/E7: the baseline's pass@1 at the easiest setting
    alpha: float = 0.05


def pair_gates(arm: dict, baseline: dict, ngram: Mapping[str, float], settings: GateSettings) -> dict[str, dict]:
    """Gates 1-3 of one matched pair (measurement dicts of eval/suite.measure)."""
    la, lb = arm["E1"]["next_token_loss"], baseline["E1"]["next_token_loss"]
    ceiling = min(ngram["bigram"], ngram["unigram"]) - settings.ngram_margin
    gates = {
        "ngram": {"passed": bool(la < ceiling and lb < ceiling), "loss": [la, lb], "bigram": ngram["bigram"],
                  "unigram": ngram["unigram"], "needed_below": ceiling},
        "matched": {"passed": bool(abs(la - lb) <= settings.matched_tolerance), "gap": la - lb,
                    "tolerance": settings.matched_tolerance},
    }
    if "state_use" in arm:
        lows = {k: v["ci95"][0] for k, v in arm["state_use"]["increase"].items()}
        gates["state_use"] = {"passed": bool(min(lows.values()) >= settings.state_use_margin),
                              "increase": {k: v["mean"] for k, v in arm["state_use"]["increase"].items()},
                              "lower_95": lows, "needed": settings.state_use_margin}
    return gates


def item_tests(claim: Claim, arm: Sequence[Result], baseline: Sequence[Result]) -> list[dict] | None:
    """The secondary exact test of each seed's pair, on the claim's items."""
    if claim.items is None:
        return None
    test = stats.mcnemar_exact if claim.binary_items else stats.sign_test
    return [test(claim.items(a), claim.items(b)) for a, b in zip(arm, baseline)]


def measured(claim: Claim, result: Result) -> bool:
    """Whether `result` holds the claim's number."""
    try:
        claim.metric(result)
        return True
    except (KeyError, TypeError):
        return False


def verdict_row(claim: str, label: str, arm: str, primary: bool, arm_values: Sequence[float],
                baseline_values: Sequence[float], margin: float, why_invalid: list[str], items: list | None,
                higher_is_better: bool = True) -> dict:
    """One (claim, arm) row: the paired t-test over seeds, the exact sign-flip test beside it and the
    TOST p; `finish_verdicts` adds the verdict."""
    test = stats.paired_t(arm_values, baseline_values, higher_is_better)
    return {"claim": claim, "label": label, "arm": arm, "primary": primary, "arm_values": list(arm_values),
            "baseline_values": list(baseline_values), "test": test, "exact": stats.sign_flip(test["diffs"]),
            "margin": margin, "p_tost": stats.tost(test["diffs"], margin), "valid": not why_invalid,
            "why_invalid": why_invalid, "items": items}


def row_p(row: dict) -> float:
    """The p a row is judged by: the t-test's, or the exact test's where the t-test is undefined (no spread)."""
    p = row["test"]["p"]
    return row["exact"]["p"] if math.isnan(p) and "exact" in row else p


@dataclass(frozen=True)
class Margin:
    """A claim's minimal effect and equivalence margin, in its metric's units, fixed before the run."""

    value: float
    reason: str


def margin_of(claim: Claim, margins: Mapping[str, Margin] | None) -> Margin:
    """The experiment file's margin for `claim`, else the library's default (declared with the claim)."""
    if margins and claim.key in margins:
        return margins[claim.key]
    return Margin(claim.margin, "library default (declared with the claim)")


def floor_problem(claim: Claim, who: str, values: Sequence[float], floors: Sequence[Result], margin: float,
                  what: str) -> str | None:
    """Why a model does not clear the instrument's floor by the margin (None: it does, or no floor is known).
    `values`: the model's number per seed; `floors`: the experiment's results on the floor references."""
    levels = [claim.metric(f) for f in floors if measured(claim, f)]
    if not levels:
        return None
    floor, mean = float(np.mean(levels)), float(np.mean(values))
    cleared = mean - floor >= margin if claim.higher_is_better else floor - mean >= margin
    if cleared:
        return None
    return (f"{who}'s {claim.key} {mean:.4g} does not clear its floor ({what}) {floor:.4g} by the margin {margin:g}")


def _floor_of(key: str, model: str, floors: Mapping[str, Sequence[dict]],
              references: Mapping[str, Result]) -> tuple[list[Result], str]:
    """An experiment's floor results for one compared model, and what they are."""
    if key in references:
        return [references[key]], "reference"
    return [f[key] for f in floors.get(model, ()) if key in f], "random init"


def claim_rows(pairs: Mapping[str, Sequence[dict]], experiments: Sequence[Experiment] | None = None,
               margins: Mapping[str, Margin] | None = None, floors: Mapping[str, Sequence[dict]] | None = None,
               references: Mapping[str, Result] | None = None, baseline: str = "baseline") -> list[dict]:
    """Rows for every (claim, arm) of the experiments measured on every pair. `pairs[arm]` lists, per
    seed, {"arm": measurement, "baseline": measurement, "gates": pair_gates(...)}.

    Floor gate: a claim is invalid unless both models clear the instrument's floor by the margin:
    `floors[arm]` (and `floors[baseline]`) are random-init measurements of that model's shape,
    `references[experiment key]` a model-free floor (E4: another document's continuation)."""
    rows = []
    floors, references = floors or {}, references or {}
    for arm, seeds in pairs.items():
        failed = sorted({name for s in seeds for name, v in s["gates"].items() if not v["passed"]})
        for experiment in registry.EXPERIMENTS if experiments is None else experiments:
            if not all(experiment.key in s[side] for s in seeds for side in ("arm", "baseline")):
                continue  # not measured in this comparison
            a = [s["arm"][experiment.key] for s in seeds]
            b = [s["baseline"][experiment.key] for s in seeds]
            for claim in experiment.claims:
                if not all(measured(claim, r) for r in (*a, *b)):
                    continue  # e.g. E5 without the labelled set this claim reads
                margin = margin_of(claim, margins)
                va, vb = [claim.metric(r) for r in a], [claim.metric(r) for r in b]
                why = [f"gate '{name}' failed" for name in failed]
                if claim.condition is not None:
                    why += sorted({r for r in map(claim.condition, a, b) if r})
                for who, name, values in (("the arm", arm, va), ("the baseline", baseline, vb)):
                    refs, what = _floor_of(experiment.key, name, floors, references)
                    problem = floor_problem(claim, who, values, refs, margin.value, what)
                    if problem:
                        why.append(problem)
                row = verdict_row(claim.key, claim.label, arm, claim.primary, va, vb, margin.value, why,
                                  item_tests(claim, a, b), claim.higher_is_better)
                rows.append({**row, "margin_reason": margin.reason})
    return rows


TASK_MARGIN = 0.05  # pass@1, when the experiment file gives none


def task_rows(tasks: Mapping[str, dict], baseline: str, settings: GateSettings,
              margins: Mapping[str, Margin] | None = None) -> list[dict]:
    """Verdict rows of the toy tasks (E6/E7): per task, setting and non-baseline arm, pass@1 per seed at
    matched next-token loss on the task's answers (the headline, primary at the easiest setting of a
    primary task) when measured, and at equal training tokens (then secondary); valid only if the
    baseline is off the floor at the easiest setting. `margins`: task key ("countdown") -> its margin."""
    by_name = {t.name: t for t in registry.TASKS}
    rows = []
    for task, result in tasks.items():
        key = by_name[task].key if task in by_name else task
        chosen = (margins or {}).get(key, Margin(TASK_MARGIN, "library default (pass@1)"))
        margin = chosen.value
        per_arm = result["pass_at_1"]  # arm -> setting -> [per seed]
        settings_order = list(per_arm[baseline])
        easiest = settings_order[0]
        floor = float(np.mean(per_arm[baseline][easiest]))
        why = [] if floor >= settings.task_floor else [
            f"{baseline} pass@1 {floor:.2f} at the easiest setting ({easiest}) is below {settings.task_floor}"]
        matched = result.get("matched_loss")
        correct, seeds = result.get("correct"), result.get("seeds")
        for setting in settings_order:
            headline = setting == easiest and task in by_name and by_name[task].primary
            for arm in per_arm:
                if arm == baseline:
                    continue
                if matched is not None:
                    m = matched[arm]
                    rows.append({**verdict_row(task, f"{task}: pass@1, {setting}, at matched answer loss", arm,
                                               headline, m[setting], m["baseline"][setting], margin, list(why), None),
                                 "margin_reason": chosen.reason})
                # The baseline's entries of the arm's seeds (an arm may have fewer; older results: the same seeds).
                pick = [seeds[baseline].index(s) for s in seeds[arm]] if seeds else range(len(per_arm[arm][setting]))
                base_pass = [per_arm[baseline][setting][i] for i in pick]
                exact = [stats.mcnemar_exact(a, correct[baseline][setting][i]) for a, i in
                         zip(correct[arm][setting], pick)] if correct else None
                label = f"{task}: pass@1, {setting}" + (", equal tokens" if matched is not None else "")
                rows.append({**verdict_row(task, label, arm, headline and matched is None, per_arm[arm][setting],
                                           base_pass, margin, list(why), exact), "margin_reason": chosen.reason})
    return rows


def finish_verdicts(rows: list[dict], alpha: float = stats.ALPHA) -> None:
    """Holm over the valid primary rows of the whole comparison (every claim, arm and task), then
    each row's verdict; rows are updated in place."""
    family = {i: row_p(r) for i, r in enumerate(rows) if r["primary"] and r["valid"]}
    adjusted = stats.holm(family)
    for i, r in enumerate(rows):
        r["p_holm"] = adjusted.get(i, row_p(r)) if r["primary"] else row_p(r)
        r["verdict"] = stats.verdict(r["test"]["diff"], r["p_holm"], r["p_tost"], r["valid"], alpha,
                                     r["test"]["ci95"], r["margin"])
