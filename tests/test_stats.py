"""Verdict statistics against library references and constructed cases: paired t, TOST, Holm,
exact tests, gates and the verdict rows."""

import math

import numpy as np
import pytest
from scipy import stats as sps

from futuretoken.eval import claims as C
from futuretoken.eval import stats


def test_paired_t_matches_scipy_and_orients_by_direction():
    a, b = [0.5, 0.7, 0.65, 0.6], [0.4, 0.5, 0.6, 0.45]
    t = stats.paired_t(a, b)
    ref = sps.ttest_rel(a, b)
    assert t["p"] == pytest.approx(ref.pvalue) and t["t"] == pytest.approx(ref.statistic)
    assert t["ci95"][0] < t["diff"] < t["ci95"][1]
    lower_is_better = stats.paired_t(a, b, higher_is_better=False)
    assert lower_is_better["diff"] == pytest.approx(-t["diff"]) and lower_is_better["p"] == pytest.approx(t["p"])
    assert math.isnan(stats.paired_t([1.0], [0.5])["p"])  # one seed: nothing to test


def test_tost_says_equivalent_only_for_tight_small_differences():
    tight = [0.001, -0.002, 0.0015, 0.0, -0.001]
    assert stats.tost(tight, margin=0.02) < 0.05
    assert stats.tost(tight, margin=0.0005) > 0.05  # the margin is inside the spread
    wide = [0.05, -0.06, 0.04, -0.05, 0.06]
    assert stats.tost(wide, margin=0.02) > 0.05


def test_holm_step_down():
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": math.nan})
    assert adjusted["a"] == pytest.approx(0.03)  # 3 x 0.01
    assert adjusted["c"] == pytest.approx(0.06)  # 2 x 0.03
    assert adjusted["b"] == pytest.approx(0.06)  # max(1 x 0.04, 0.06): monotone
    assert math.isnan(adjusted["d"])


def test_exact_tests():
    m = stats.mcnemar_exact([True] * 8 + [False] * 2 + [True] * 5, [False] * 8 + [True] * 2 + [True] * 5)
    assert (m["a_only"], m["b_only"]) == (8, 2)
    assert m["p"] == pytest.approx(sps.binomtest(8, 10, 0.5).pvalue)
    s = stats.sign_test([3, 2, 5, 1], [1, 2, 4, 2])
    assert (s["a_higher"], s["b_higher"]) == (2, 1)


@pytest.mark.parametrize("diff,p_adj,p_tost,valid,expected", [
    (0.1, 0.01, 0.9, True, "reproduced"),
    (-0.1, 0.01, 0.9, True, "not reproduced"),
    (0.001, 0.6, 0.01, True, "equivalent"),
    (0.05, 0.2, 0.3, True, "inconclusive"),
    (0.1, 0.01, 0.9, False, "invalid at this scale"),
])
def test_verdict(diff, p_adj, p_tost, valid, expected):
    assert stats.verdict(diff, p_adj, p_tost, valid) == expected


def measurement(loss, excess, state_use=None, brown=0.7, chance=0.3):
    m = {"model_type": "ftp" if state_use is not None else "gpt",
         "E1": {"next_token_loss": loss},
         "E2": {"r2": 1.0},
         "E3": {"summary": {"excess": {"mean": excess}}},
         "E5": {"brown": {"probe": {"mean": {"accuracy": brown, "correct": [True, False, True],
                                             "above_chance": {"passed": brown > chance}}}}}}
    if state_use is not None:
        m["state_use"] = {"increase": {k: {"mean": state_use, "ci95": [state_use - 0.01, state_use + 0.01]}
                                       for k in ("mean_state", "shuffled_state")}}
    return m


NGRAM = {"unigram": 6.0, "bigram": 4.0}


def test_gates_pass_and_fail_for_the_stated_reasons():
    settings = C.GateSettings()
    ok = C.pair_gates(measurement(3.80, 0.2, state_use=0.3), measurement(3.81, 0.1), NGRAM, settings)
    assert all(g["passed"] for g in ok.values())
    above_bigram = C.pair_gates(measurement(3.97, 0.2, state_use=0.3), measurement(3.96, 0.1), NGRAM, settings)
    assert not above_bigram["ngram"]["passed"] and above_bigram["matched"]["passed"]
    unused_state = C.pair_gates(measurement(3.8, 0.2, state_use=0.02), measurement(3.81, 0.1), NGRAM, settings)
    assert not unused_state["state_use"]["passed"]
    mismatched = C.pair_gates(measurement(3.7, 0.2, state_use=0.3), measurement(3.8, 0.1), NGRAM, settings)
    assert not mismatched["matched"]["passed"]


def rows_for(ftp_excess, gpt_excess, state_use=0.3, brown=(0.7, 0.6), **claim_rows_args):
    settings = C.GateSettings()
    pairs = {"ftp": []}
    for fe, ge in zip(ftp_excess, gpt_excess):
        f, g = measurement(3.8, fe, state_use=state_use, brown=brown[0]), measurement(3.8, ge, brown=brown[1])
        pairs["ftp"].append({"arm": f, "baseline": g, "gates": C.pair_gates(f, g, NGRAM, settings)})
    rows = C.claim_rows(pairs, **claim_rows_args)
    C.finish_verdicts(rows)
    return {r["claim"]: r for r in rows}


def test_claim_rows_give_seed_level_verdicts():
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09])
    assert rows["smoothness"]["verdict"] == "reproduced"
    assert rows["smoothness"]["test"]["n"] == 3
    assert rows["topic_in_domain"]["items"] is not None  # per-text exact tests are attached
    same = rows_for([0.100, 0.101, 0.099], [0.1005, 0.1, 0.1])
    assert same["smoothness"]["verdict"] == "equivalent"


def test_a_failed_gate_makes_every_claim_invalid():
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09], state_use=0.0)
    assert {r["verdict"] for r in rows.values()} == {"invalid at this scale"}
    assert "gate 'state_use' failed" in rows["smoothness"]["why_invalid"]


def test_majority_class_guard_invalidates_only_its_claim():
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09], brown=(0.7, 0.2))
    assert rows["topic_in_domain"]["verdict"] == "invalid at this scale"
    assert rows["smoothness"]["verdict"] == "reproduced"


def test_holm_covers_every_primary_row():
    rows = list(rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09]).values())
    primary = [r for r in rows if r["primary"] and r["valid"]]
    assert len(primary) >= 2
    assert all(r["p_holm"] >= C.row_p(r) for r in primary)
    assert np.isclose(min(r["p_holm"] for r in primary), len(primary) * min(C.row_p(r) for r in primary))


@pytest.mark.parametrize("diffs", [[0.3, -0.1, 0.2], [0.1, 0.2, 0.15, 0.3, -0.05], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                                   [0.0, 0.0, 0.0], [0.5, -0.5, 0.2, 0.1]])
def test_sign_flip_is_scipys_exact_permutation_test(diffs):
    ours = stats.sign_flip(diffs)
    ref = sps.permutation_test((np.asarray(diffs),), np.mean, permutation_type="samples", n_resamples=np.inf,
                               alternative="two-sided")
    assert ours["p"] == pytest.approx(ref.pvalue) and ours["min_p"] == 2 / 2 ** len(diffs)


def test_no_p_of_zero_when_the_differences_have_no_spread():
    t = stats.paired_t([0.7, 0.7, 0.7], [0.6, 0.6, 0.6])
    assert math.isnan(t["p"]) and t["diff"] == pytest.approx(0.1)  # undefined, never 0
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09])  # brown 0.7 vs 0.6 on every seed
    row = rows["topic_in_domain"]
    assert C.row_p(row) == row["exact"]["p"] == 0.25  # 3 seeds: the exact test's smallest p
    assert row["verdict"] != "reproduced"  # 0.25 is no evidence at 3 seeds


def test_a_significant_difference_inside_the_margin_is_not_reproduced():
    # p < 0.05 but the CI reaches inside the minimal effect: neither reproduced nor refuted.
    assert stats.verdict(0.03, 0.01, 0.9, True, ci95=(0.01, 0.05), margin=0.02) == "inconclusive"
    assert stats.verdict(0.05, 0.01, 0.9, True, ci95=(0.03, 0.07), margin=0.02) == "reproduced"
    assert stats.verdict(-0.05, 0.01, 0.9, True, ci95=(-0.07, -0.03), margin=0.02) == "not reproduced"
    small = rows_for([0.12, 0.125, 0.122], [0.10, 0.104, 0.101])  # +0.02 on every seed, tight
    assert small["smoothness"]["test"]["p"] < 0.05 and small["smoothness"]["verdict"] != "reproduced"


def test_margins_of_the_experiment_file_replace_the_defaults_and_are_recorded():
    margins = {"smoothness": C.Margin(0.5, "half the floor-to-ceiling range")}
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09], margins=margins)
    assert rows["smoothness"]["margin"] == 0.5 and rows["smoothness"]["margin_reason"] == "half the floor-to-ceiling range"
    assert rows["smoothness"]["verdict"] == "equivalent"  # +0.2 lies well inside ±0.5
    assert rows["future_bag"]["margin_reason"].startswith("library default")


def test_a_model_on_its_floor_makes_the_claim_invalid():
    floor = {"E3": {"summary": {"excess": {"mean": 0.30}}}}  # random init about as smooth as the trained arm
    rows = rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09], floors={"ftp": [floor], "baseline": [floor]})
    why = rows["smoothness"]["why_invalid"]
    assert rows["smoothness"]["verdict"] == "invalid at this scale"
    assert any("the arm's smoothness 0.31 does not clear its floor (random init) 0.3 by the margin 0.02" in w for w in why), why
    assert rows["future_bag"]["valid"]  # no E2 floor given: nothing to gate on
    low = {"E3": {"summary": {"excess": {"mean": -0.5}}}}
    assert rows_for([0.30, 0.32, 0.31], [0.10, 0.12, 0.09], floors={"ftp": [low], "baseline": [low]})[
        "smoothness"]["verdict"] == "reproduced"
