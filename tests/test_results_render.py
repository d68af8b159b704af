"""Every committed comparison re-renders from its results.json to the report committed beside it: the
report is a function of the results alone, and today's code reads every older results schema.

When the report's presentation changes on purpose, re-render the committed reports (the results are
untouched; reproduce's appended wall-time line is kept):
    for d in results/*/ results/*/paper/: render_report(read_results(d)) -> d/report.md
"""

from pathlib import Path

import pytest

from futuretoken.eval.render import RESULTS_SCHEMA, read_results, render_report

ROOT = Path(__file__).parent.parent
FOLDERS = sorted(p.parent for p in ROOT.glob("results/**/results.json"))


def test_there_are_committed_comparisons():
    assert len(FOLDERS) >= 3, FOLDERS


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: str(p.relative_to(ROOT)))
def test_committed_report_rerenders_the_same(folder):
    results = read_results(folder)
    assert results["schema"] == RESULTS_SCHEMA
    committed = (folder / "report.md").read_text().split("\nWall time of this call")[0]  # reproduce appends it
    assert render_report(results).rstrip() == committed.rstrip()


def test_the_demo_report_opens_with_what_it_cannot_show_and_the_committed_verdicts(tmp_path):
    from futuretoken.demo import COMMITTED, committed_verdicts

    lines = "\n".join(committed_verdicts())
    assert "not to decide a claim" in lines and "results/calibration-demo-wsd" in lines
    rows = read_results(COMMITTED)["rows"]
    assert all(f"| {r['label']} | {r['arm']} | {r['verdict']} |" in lines for r in rows)
    assert "| claim |" not in "\n".join(committed_verdicts(tmp_path))  # a copy without results: the text alone
