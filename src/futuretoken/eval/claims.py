"""The paper's claims, the validity gates they stand on, and their verdicts.

A comparison has a baseline arm (GPT) and one or more other arms (FTP variants), each trained
with the same seeds. For each non-baseline arm and seed there is a matched checkpoint pair
(eval/compare.py) with one measurement dict per model (eval/suite.py). From these:

Gates, per pair (a claim is *invalid at this scale* unless they pass for every seed):
1. n-gram: both models' next-token loss on the report windows lies below the count-based
   bigram and unigram losses by at least `ngram_margin` nats;
2. state use (FTP-like arms): replacing h_t by the mean state and by another position's state
   each raises the loss by at least `state_use_margin` nats (lower end of the 95% interval);
3. matching: the pair's next-token losses on the report windows (disjoint from the selection
   windows that chose it) differ by at most `matched_tolerance` nats.
Claims add their own conditions (E5: both probes beat the majority class).

Verdicts: eval/stats.py (paired t over seeds, Holm over the primary claims, TOST margins).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import stats


@dataclass
class GateSettings:
    ngram_margin: float = 0.05  # nats below the bigram (and unigram) loss
    state_use_margin: float = 0.05  # nats of loss increase when h_t is replaced (lower 95% bound)
    matched_tolerance: float = 0.03  # nats between the pair's next-token losses on report windows
    task_floor: float = 0.3  # E6/E7: the baseline's pass@1 at the easiest setting
    alpha: float = 0.05


def pair_gates(ftp: dict, gpt: dict, ngram: Mapping[str, float], settings: GateSettings) -> dict[str, dict]:
    """Gates 1-3 of one matched pair (measurement dicts of eval/suite.measure)."""
    lf, lg = ftp["E1"]["next_token_loss"], gpt["E1"]["next_token_loss"]
    ceiling = min(ngram["bigram"], ngram["unigram"]) - settings.ngram_margin
    gates = {
        "ngram": {"passed": bool(lf < ceiling and lg < ceiling), "loss": [lf, lg], "bigram": ngram["bigram"],
                  "unigram": ngram["unigram"], "needed_below": ceiling},
        "matched": {"passed": bool(abs(lf - lg) <= settings.matched_tolerance), "gap": lf - lg,
                    "tolerance": settings.matched_tolerance},
    }
    if "state_use" in ftp:
        lows = {k: v["ci95"][0] for k, v in ftp["state_use"]["increase"].items()}
        gates["state_use"] = {"passed": bool(min(lows.values()) >= settings.state_use_margin),
                              "increase": {k: v["mean"] for k, v in ftp["state_use"]["increase"].items()},
                              "lower_95": lows, "needed": settings.state_use_margin}
    return gates


Metric = Callable[[dict], float]


@dataclass(frozen=True)
class Claim:
    key: str
    label: str  # what is compared, as the report prints it
    metric: Metric  # measurement dict -> the claim's number for one model
    margin: float  # equivalence margin (TOST), in the metric's units
    primary: bool  # in the Holm family
    higher_is_better: bool = True
    condition: Callable[[dict, dict], str | None] | None = None  # (ftp, gpt) -> why invalid, or None
    items: Callable[[dict], Sequence] | None = None  # per-item outcomes for the secondary exact test
    binary_items: bool = False  # items are pass/fail (McNemar) rather than scores (sign test)


def _e5(dataset: str, pool: str = "mean") -> Metric:
    return lambda m: m["E5"][dataset]["probe"][pool]["accuracy"]


def _above_chance(dataset: str, pool: str = "mean"):
    def condition(ftp: dict, gpt: dict) -> str | None:
        for name, m in (("FTP", ftp), ("GPT", gpt)):
            if not m["E5"][dataset]["probe"][pool]["above_chance"]["passed"]:
                return f"{name}'s {dataset} probe does not beat the majority class"
        return None

    return condition


CLAIMS: tuple[Claim, ...] = (
    Claim("smoothness", "E3: text-specific smoothness (centred adjacent cosine minus cross-document)",
          lambda m: m["E3"]["summary"]["excess"]["mean"], margin=0.02, primary=True),
    Claim("coherence", "E4: topic coherence (MiniLM cosine, prompt vs continuation)",
          lambda m: m["E4"]["mean"]["cosine"], margin=0.01, primary=True,
          items=lambda m: m["E4"]["per_prompt"]["cosine"]),
    Claim("topic_in_domain", "E5: in-domain topic probe accuracy (Brown genres, held-out documents)",
          _e5("brown"), margin=0.02, primary=True, condition=_above_chance("brown"),
          items=lambda m: m["E5"]["brown"]["probe"]["mean"]["correct"], binary_items=True),
    Claim("topic_bbc", "E5: topic probe accuracy (BBC News, out of domain)",
          _e5("bbc"), margin=0.02, primary=True, condition=_above_chance("bbc"),
          items=lambda m: m["E5"]["bbc"]["probe"]["mean"]["correct"], binary_items=True),
    Claim("sentiment", "E5: sentiment probe accuracy (Rotten Tomatoes)",
          _e5("rotten_tomatoes"), margin=0.02, primary=False, condition=_above_chance("rotten_tomatoes"),
          items=lambda m: m["E5"]["rotten_tomatoes"]["probe"]["mean"]["correct"], binary_items=True),
    Claim("future_bag", "E2: future bag x_{t+2..t+N} explained by a linear probe on h_t (R^2, %)",
          lambda m: m["E2"]["r2"], margin=0.2, primary=False),
)


def available(claim: Claim, measurement: dict) -> bool:
    try:
        claim.metric(measurement)
        return True
    except (KeyError, TypeError):
        return False


def item_tests(claim: Claim, ftp: Sequence[dict], gpt: Sequence[dict]) -> list[dict] | None:
    """The secondary exact test of each seed's pair, on the claim's items."""
    if claim.items is None:
        return None
    test = stats.mcnemar_exact if claim.binary_items else stats.sign_test
    return [test(claim.items(f), claim.items(g)) for f, g in zip(ftp, gpt)]


def claim_rows(pairs: Mapping[str, Sequence[tuple[dict, dict, dict]]], claims: Sequence[Claim] = CLAIMS) -> list[dict]:
    """Rows for every (claim, arm), verdicts still to come (`finish_verdicts`). `pairs[arm]` lists,
    per seed, (ftp measurement, gpt measurement, gates)."""
    rows = []
    for arm, seeds in pairs.items():
        ftp, gpt, gates = [s[0] for s in seeds], [s[1] for s in seeds], [s[2] for s in seeds]
        failed = sorted({name for g in gates for name, v in g.items() if not v["passed"]})
        for claim in claims:
            if not all(available(claim, m) for m in (*ftp, *gpt)):
                continue
            f = [claim.metric(m) for m in ftp]
            g = [claim.metric(m) for m in gpt]
            test = stats.paired_t(f, g, claim.higher_is_better)
            why = [f"gate '{name}' failed" for name in failed]
            if claim.condition is not None:
                why += sorted({r for r in (claim.condition(a, b) for a, b in zip(ftp, gpt)) if r})
            rows.append({"claim": claim.key, "label": claim.label, "arm": arm, "primary": claim.primary,
                         "ftp": f, "gpt": g, "test": test, "margin": claim.margin,
                         "p_tost": stats.tost(test["diffs"], claim.margin), "valid": not why, "why_invalid": why,
                         "items": item_tests(claim, ftp, gpt)})
    return rows


def finish_verdicts(rows: list[dict], alpha: float = stats.ALPHA) -> None:
    """Holm over the valid primary rows of the whole comparison (every claim, arm and task), then
    each row's verdict; rows are updated in place."""
    family = {i: r["test"]["p"] for i, r in enumerate(rows) if r["primary"] and r["valid"]}
    adjusted = stats.holm(family)
    for i, r in enumerate(rows):
        r["p_holm"] = adjusted.get(i, r["test"]["p"]) if r["primary"] else r["test"]["p"]
        r["verdict"] = stats.verdict(r["test"]["diff"], r["p_holm"], r["p_tost"], r["valid"], alpha)


def task_rows(tasks: Mapping[str, dict], baseline: str, settings: GateSettings,
              margin: float = 0.05) -> list[dict]:
    """Verdict rows of the toy tasks (E6/E7): per task, setting and non-baseline arm, pass@1 per seed
    at equal training tokens; valid only if the baseline is off the floor at the easiest setting."""
    rows = []
    for task, result in tasks.items():
        per_arm = result["pass_at_1"]  # arm -> setting -> [per seed]
        settings_order = list(per_arm[baseline])
        easiest = settings_order[0]
        floor = float(np.mean(per_arm[baseline][easiest]))
        for setting in settings_order:
            for arm in per_arm:
                if arm == baseline:
                    continue
                test = stats.paired_t(per_arm[arm][setting], per_arm[baseline][setting])
                why = [] if floor >= settings.task_floor else [
                    f"{baseline} pass@1 {floor:.2f} at the easiest setting ({easiest}) is below {settings.task_floor}"]
                items = result.get("correct")
                rows.append({"claim": task, "label": f"{task}: pass@1, {setting}", "arm": arm,
                             "primary": setting == easiest and task.startswith("E6"),
                             "ftp": per_arm[arm][setting], "gpt": per_arm[baseline][setting], "test": test,
                             "margin": margin, "p_tost": stats.tost(test["diffs"], margin), "valid": not why,
                             "why_invalid": why,
                             "items": [stats.mcnemar_exact(a, b) for a, b in
                                       zip(items[arm][setting], items[baseline][setting])] if items else None})
    return rows


def summarise_seeds(values: Sequence[float]) -> str:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return f"{v.mean():.3f}" if len(v) else "-"
    return f"{v.mean():.3f} ± {v.std(ddof=1) / math.sqrt(len(v)):.3f}"
