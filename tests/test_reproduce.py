"""The paper pipeline end to end at toy size: compare (E1-E5 + verdicts + plots) and the E6/E7 tasks."""

import json

from conftest import run_config
from futuretoken.eval.paper import SuiteSettings, compare
from futuretoken.reproduce import TaskSettings, render_tasks, run_tasks

TOY_SUITE = SuiteSettings(eval_batches=2, probe_steps=3, smooth_windows=4, labelled_limit=50, coherence_prompts=2,
                          coherence_seeds=(0,), coherence_new_tokens=8, coherence_window=4)


def test_compare_writes_a_report_with_every_experiment(trained_runs, tmp_path):
    report = compare(trained_runs / "ftp", trained_runs / "gpt", tmp_path, TOY_SUITE)
    text = report.read_text()
    assert "Matched pair: FTP step 8" in text and "## The paper's claims" in text
    results = json.loads((tmp_path / "results.json").read_text())
    for model in ("ftp", "gpt"):
        r = results[model]
        assert {"E1", "E2_probe", "E3", "E4", "E5", "floor_random_init"} <= set(r)
        assert len(r["E2_probe"]["per_distance"]) == 3  # the run config's horizon
        assert 0 <= r["E5"]["bbc"]["probe"]["mean"]["mean"] <= 1
    assert len(results["verdicts"]) == 4
    assert all(v["verdict"] in ("reproduced", "not reproduced", "inconclusive at this scale")
               for v in results["verdicts"].values())
    assert (tmp_path / "experiments.png").stat().st_size > 10_000


def test_toy_tasks_train_both_models_and_score_them(data_dir, tmp_path):
    settings = TaskSettings(documents=1000, max_steps=3, n_eval=4, difficulties=(2,), star_degree=2, star_length=2,
                            tokenizer="bpe:300")
    base = run_config(data_dir, tmp_path / "unused")
    base.model.block_size = 64  # room for a countdown or path-star prompt and its answer
    tasks = run_tasks(base, settings, tmp_path)
    assert set(tasks) == {"E6 countdown", "E7 path-star"}
    for task in tasks.values():
        for row in task["results"].values():
            assert 0 <= row["ftp"] <= 1 and 0 <= row["gpt"] <= 1 and row["verdict"]
    assert "E6 countdown" in render_tasks(tasks, settings)
