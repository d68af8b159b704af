"""Statistics behind every verdict. The unit of replication is the training seed.

For a claim "the arm beats the baseline on metric m", seed i gives one paired difference
d_i = m(arm_i) - m(baseline_i) (negated when lower is better), the two models sharing the init
seed, the data order and the evaluation items. Over the seeds:
- paired t-test of mean(d) = 0 (two-sided) and its 95% confidence interval;
- beside it, the exact sign-flip test (all 2^n sign assignments of the d_i): distribution-free,
  its smallest possible p is 2 / 2^n (0.25 with 3 seeds, 0.0625 with 5), and it is the test when
  the d_i have no spread (the t-test is undefined there: no p of 0 is ever reported);
- Holm's step-down correction over the primary claims (family-wise error 5%);
- TOST (two one-sided t-tests) against the claim's margin, so that "no difference" can be
  concluded when it holds, instead of hiding in "inconclusive";
- verdicts: *invalid at this scale* when a validity gate failed; *reproduced* / *not
  reproduced* when the Holm-adjusted p < alpha in the arm's / the baseline's favour AND the 95%
  CI clears the margin (the minimal effect) on that side; *equivalent* when TOST p < alpha;
  *inconclusive* otherwise (including a significant difference smaller than the margin).
Item-level exact tests (prompts, texts, problems) are secondary: McNemar's exact test for
paired binary outcomes, the exact sign test for paired scores.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

ALPHA = 0.05
VERDICTS = ("reproduced", "not reproduced", "equivalent", "inconclusive", "invalid at this scale")


def paired_t(ftp: Sequence[float], gpt: Sequence[float], higher_is_better: bool = True) -> dict:
    """Paired t-test over seeds of d_i = ftp_i - gpt_i (sign flipped when lower is better, so d > 0
    always favours FTP). Needs at least 2 seeds; with fewer the test is undefined (p = nan)."""
    a, b = np.asarray(ftp, dtype=float), np.asarray(gpt, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired samples need equal lengths, got {len(a)} and {len(b)}")
    d = (a - b) if higher_is_better else (b - a)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return {"n": n, "diff": mean, "sd": math.nan, "se": math.nan, "t": math.nan, "df": n - 1,
                "p": math.nan, "ci95": [math.nan, math.nan], "diffs": d.tolist()}
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    if se == 0.0:  # identical differences: no spread to weigh them, the t-test is undefined (see sign_flip)
        t, p = (math.nan, math.nan) if mean != 0 else (0.0, 1.0)
    else:
        t = mean / se
        p = float(2 * sps.t.sf(abs(t), n - 1))
    half = float(sps.t.ppf(0.975, n - 1) * se)
    return {"n": n, "diff": mean, "sd": sd, "se": se, "t": float(t), "df": n - 1, "p": p,
            "ci95": [mean - half, mean + half], "diffs": d.tolist()}


MAX_EXACT_SEEDS = 20  # 2^20 sign assignments: enumerated in well under a second


def sign_flip(diffs: Sequence[float]) -> dict:
    """Exact two-sided sign-flip test of mean(d) = 0: under H0 (differences symmetric about 0) each
    of the 2^n sign assignments is equally likely; p is the share whose |mean| reaches the observed
    one (the observed assignment included, so p >= 2 / 2^n: never 0)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return {"p": math.nan, "n": 0, "min_p": math.nan}
    if n > MAX_EXACT_SEEDS:
        raise ValueError(f"{n} paired differences: the exact test enumerates 2^n sign assignments; "
                         f"use at most {MAX_EXACT_SEEDS} seeds per claim")
    signs = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1  # (2^n, n) every assignment of +-1
    means = np.abs(signs @ d) / n  # (2^n,)
    observed = abs(float(d.mean()))
    p = float(np.mean(means >= observed * (1 - 1e-12)))  # ties within rounding count as reaching it
    return {"p": p, "n": n, "min_p": 2.0 / 2**n}


def tost(diffs: Sequence[float], margin: float) -> float:
    """p-value of the two one-sided t-tests that the mean difference lies inside (-margin, margin)."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n < 2 or margin <= 0:
        return math.nan
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0.0:
        return 0.0 if abs(d.mean()) < margin else 1.0
    lower = sps.t.sf((d.mean() + margin) / se, n - 1)  # H0: mean <= -margin
    upper = sps.t.cdf((d.mean() - margin) / se, n - 1)  # H0: mean >= +margin
    return float(max(lower, upper))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values (family-wise error control); nan p-values stay nan and are not counted."""
    valid = sorted((p, k) for k, p in p_values.items() if not math.isnan(p))
    m, running, out = len(valid), 0.0, {k: math.nan for k in p_values}
    for i, (p, key) in enumerate(valid):
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return out


def verdict(diff: float, p_adjusted: float, p_tost: float, valid: bool, alpha: float = ALPHA,
            ci95: Sequence[float] | None = None, margin: float = 0.0) -> str:
    """One claim's verdict from its (Holm-adjusted) test, its CI against the minimal effect `margin`,
    its equivalence test and its gates."""
    if not valid:
        return "invalid at this scale"
    if not math.isnan(p_adjusted) and p_adjusted < alpha:
        low, high = ci95 if ci95 is not None else (diff, diff)
        if diff > 0 and low > margin:
            return "reproduced"
        if diff < 0 and high < -margin:
            return "not reproduced"
    if not math.isnan(p_tost) and p_tost < alpha:
        return "equivalent"
    return "inconclusive"


def mcnemar_exact(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict:
    """Exact McNemar test on paired binary outcomes (the same items scored for two models)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes need equal lengths, got {len(a)} and {len(b)}")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = a_only + b_only
    p = float(sps.binomtest(a_only, n, 0.5).pvalue) if n else 1.0
    return {"a_only": a_only, "b_only": b_only, "p": p, "n": int(len(a))}


def sign_test(scores_a: Sequence[float], scores_b: Sequence[float]) -> dict:
    """Exact sign test on paired scores (ties dropped): how often item i scores higher for a than for b."""
    d = np.asarray(scores_a, dtype=float) - np.asarray(scores_b, dtype=float)
    wins, losses = int(np.sum(d > 0)), int(np.sum(d < 0))
    n = wins + losses
    p = float(sps.binomtest(wins, n, 0.5).pvalue) if n else 1.0
    return {"a_higher": wins, "b_higher": losses, "p": p, "n": int(len(d))}


def mean_ci(values: Sequence[float]) -> dict:
    """Mean and t-based 95% confidence interval of independent values (e.g. per-window losses)."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    mean = float(v.mean()) if n else math.nan
    if n < 2:
        return {"mean": mean, "ci95": [math.nan, math.nan], "n": n}
    half = float(sps.t.ppf(0.975, n - 1) * v.std(ddof=1) / math.sqrt(n))
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}
