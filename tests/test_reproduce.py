"""The paper pipeline end to end at toy size: arms x seeds trained, compared with gates, statistics,
plots and a resumable cache, and the E6/E7 tasks scored per problem."""

import json

import pytest

import futuretoken as ft
from conftest import run_config
from futuretoken.checkpoint import CheckpointError, run_data_dir
from futuretoken.config import ConfigError
from futuretoken.eval.coherence import EXPERIMENT as COHERENCE
from futuretoken.eval.suite import SuiteSettings
from futuretoken.study import Study, compare_runs, reproduce
from futuretoken.study.pieces import merge_pieces

# No E4 (the judge is tested on its own) and no E5 (labelled sets are fetched; tested on their own).
TOY_TABLE = {"eval_batches": 2, "trajectory_batches": 1, "floor_seeds": [0], "future_bag": {"windows": 8},
             "smoothness": {"per_document": 4, "min_windows": 4}, "coherence": {"prompts": 0},
             "classification": {"datasets": []}}
TOY_SUITE = SuiteSettings.from_dict(TOY_TABLE)


def test_compare_writes_gates_claims_and_plots_and_resumes_from_its_cache(trained_runs, tmp_path):
    runs = {"gpt": {0: trained_runs / "gpt"}, "ftp": {0: trained_runs / "ftp"}}
    report = compare_runs(runs, "gpt", tmp_path, TOY_SUITE, device="cpu")
    text = report.read_text()
    assert "## Validity gates" in text and "## Claims" in text and "bigram" in text
    results = json.loads((tmp_path / "results.json").read_text())
    pair = results["pairs"]["ftp"][0]
    assert {"E1", "E2", "E3", "state_use"} <= set(pair["arm"]) and "state_use" not in pair["baseline"]
    assert results["schema"] == 2 and "E4" not in pair["arm"] and "E5" not in pair["arm"]  # switched off
    assert set(pair["gates"]) == {"ngram", "matched", "state_use"}
    # 8 training steps: the models are near the unigram loss, so the gates fail and say so.
    assert {r["verdict"] for r in results["rows"]} == {"invalid at this scale"}
    assert results["matched"]["ftp"]["0"]["step"] == 8
    assert (tmp_path / "claims.png").stat().st_size > 5_000 and (tmp_path / "training.png").stat().st_size > 5_000
    cached = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert any(n.startswith("measure-ftp-s0-8") for n in cached)
    model = ft.load(tmp_path / "models" / "ftp-seed0")  # the compared checkpoint, weights only
    assert model.model_type == "ftp" and model.tokenizer is not None
    assert sum(f.stat().st_size for f in (tmp_path / "models").rglob("*") if f.is_file()) < 10e6
    assert set(results["models"]) == {"ftp-seed0", "gpt-seed0-matched-to-ftp"} and "## Models" in text
    with pytest.raises(CheckpointError, match="exported weights only"):
        ft.train(run_config(run_data_dir(tmp_path / "models" / "ftp-seed0"), tmp_path / "models" / "ftp-seed0"),
                 resume=True)
    again = compare_runs(runs, "gpt", tmp_path, TOY_SUITE, device="cpu")  # everything read back from the cache
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == results["rows"]
    assert again.read_text() == text


def test_compare_four_objectives_with_one_report_column_per_arm(trained_runs, tmp_path):
    """GPT, FTP, MTP and MTP-seq at matched next-token loss: every arm is paired with the baseline,
    gates 1 and 3 apply to all, the state-use gate only to FTP, floors come per shape, and the claims
    table has one row per claim and one column per arm."""
    arms = ("gpt", "ftp", "mtp", "mtp_seq")
    report = compare_runs({arm: {0: trained_runs / arm} for arm in arms}, "gpt", tmp_path, TOY_SUITE, device="cpu")
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["pairs"]) == set(results["matched"]) == {"ftp", "mtp", "mtp_seq"}
    for arm in ("mtp", "mtp_seq"):
        pair = results["pairs"][arm][0]
        assert {"E1", "E2", "E3"} <= set(pair["arm"]) and "state_use" not in pair["arm"]
        assert set(pair["gates"]) == {"ngram", "matched"}
    assert set(results["pairs"]["ftp"][0]["gates"]) == {"ngram", "matched", "state_use"}
    assert set(results["state_use_trajectory"]) == {"ftp"} and len(results["floors"]) == 4
    flops = {arm: results["arms"][arm]["train_flops_per_token"] for arm in arms}
    assert flops["gpt"] < flops["mtp"] < flops["mtp_seq"]  # N = 3: two extra blocks; two modules and heads
    claims = {r["claim"] for r in results["rows"]}
    assert len(results["rows"]) == 3 * len(claims) and {r["arm"] for r in results["rows"]} == set(results["pairs"])
    text = report.read_text()
    table = text[text.index("## Claims"):text.index("Secondary, item-level")]
    assert "| claim | gpt (mean ± SE) | ftp | mtp | mtp_seq |" in table
    assert len([line for line in table.splitlines() if line.startswith("| E")]) == len(claims)
    assert table.count("invalid at this scale") == 3 * len(claims)


def test_reproduce_trains_arms_and_seeds_and_the_tasks(data_dir, tmp_path):
    base = run_config(data_dir, tmp_path / "unused", max_steps=4, ckpt_interval=2, keep_every=2, eval_interval=4)
    values = base.to_dict()
    values["model"]["block_size"] = 48  # room for a countdown or path-star prompt and its answer
    study = Study.from_dict({
        **values,
        "experiment": {"seeds": [0, 1], "workers": 1},
        "arms": {"gpt": {"train": {"model": "gpt"}}, "ftp": {"train": {"model": "ftp"}},
                 "ftp-learned": {"train": {"model": "ftp"}, "model": {"decoder_start": "learned"}, "seeds": [1]}},
        "suite": TOY_TABLE,
        "tasks": {"documents": 400, "max_steps": 4, "keep_every": 2, "block_size": 48, "n_eval": 5,
                  "difficulties": [2], "star_degree": 2, "star_length": 2, "tokenizer": "bpe:300",
                  "arms": ["gpt", "ftp"]},
    })
    report = reproduce(study, tmp_path / "out", device="cpu")
    results = json.loads((tmp_path / "out" / "paper" / "results.json").read_text())
    assert results["seeds"] == [0, 1] and set(results["pairs"]) == {"ftp", "ftp-learned"}
    assert all(r["test"]["n"] == (1 if r["arm"] == "ftp-learned" else 2) for r in results["rows"])  # one per seed
    assert list(results["matched"]["ftp-learned"]) == ["1"]  # its one seed, paired with the baseline's seed 1
    tasks = results["tasks"]
    assert set(tasks) == {"E6 countdown", "E7 path-star"}
    for task in tasks.values():
        assert set(task["pass_at_1"]) == {"gpt", "ftp"}  # the task arms only
        for setting, per_seed in task["pass_at_1"]["ftp"].items():
            assert len(per_seed) == 2 and len(task["correct"]["ftp"][setting][0]) == 5
        assert task["equal_compute"]["ftp"]["steps"] == [2, 2]  # FTP costs more per step than GPT
    assert any(r["claim"] == "E6 countdown" for r in results["rows"])
    e6 = [r for r in results["rows"] if r["claim"] == "E6 countdown" and r["arm"] == "ftp"]
    headline = [r for r in e6 if r["primary"]]
    assert [r["label"] for r in headline] == ["E6 countdown: pass@1, 2 numbers, at matched answer loss"]
    assert any(r["label"].endswith("equal tokens") and not r["primary"] for r in e6)
    m = tasks["E6 countdown"]["matched_loss"]["ftp"]
    assert len(m["steps"]) == len(m["baseline_steps"]) == 2 and all(loss > 0 for loss in m["loss"])
    assert "Wall time of this call" in report.read_text()
    assert (tmp_path / "out" / "ftp-learned" / "seed-1" / "checkpoints").is_dir()
    assert not (tmp_path / "out" / "ftp-learned" / "seed-0").exists()

    # The same study in two pieces, seed by seed (the runs are reused): the merged verdicts are the one call's.
    first = reproduce(study, tmp_path / "out", device="cpu", seeds=[0])
    assert first == tmp_path / "out" / "pieces" / "seeds-0" / "report.md"  # seed 1 still missing: no merge yet
    merged_report = reproduce(study, tmp_path / "out", device="cpu", seeds=[1])
    assert merged_report == tmp_path / "out" / "paper" / "report.md"
    merged = json.loads((tmp_path / "out" / "paper" / "results.json").read_text())
    assert json.dumps(merged["rows"]) == json.dumps(results["rows"])
    assert merged["tasks"] == results["tasks"] and merged["matched"] == results["matched"]
    assert set(merged["pieces"]) == {"seeds-0", "seeds-1"} and "Run in 2 pieces" in merged_report.read_text()
    pieces = tmp_path / "out" / "pieces"
    (pieces / "again").mkdir()
    (pieces / "again" / "results.json").write_text((pieces / "seeds-1" / "results.json").read_text())
    with pytest.raises(ValueError, match="seed 1 is in two pieces"):
        merge_pieces(study, tmp_path / "out")


def test_coherence_is_generated_with_the_model_and_judged_later(trained_runs, tmp_path):
    """E4 splits in two: continuations are written with each model's measurement (where the model
    is, e.g. a GPU); the judge scores them when it is available (e.g. on CPU afterwards)."""
    from dataclasses import replace

    from test_eval_coherence import bow_judge

    runs = {"gpt": {0: trained_runs / "gpt"}, "ftp": {0: trained_runs / "ftp"}}
    later = SuiteSettings.from_dict({**TOY_TABLE, "coherence": {"prompts": 4, "prompt_tokens": 6, "new_tokens": 8,
                                                                 "window": 4, "judge": False}})
    compare_runs(runs, "gpt", tmp_path, later, device="cpu")
    pending = json.loads((tmp_path / "results.json").read_text())
    e4 = pending["pairs"]["ftp"][0]["arm"]["E4"]
    assert len(e4["continuations"]) == 4 and "mean" not in e4  # generated, not judged
    assert "coherence_calibration" not in pending
    now = replace(later, experiments={**later.experiments, "coherence": replace(later.of(COHERENCE), judge=True)})
    compare_runs(runs, "gpt", tmp_path, now, device="cpu", judge=bow_judge)  # the judging call
    judged = json.loads((tmp_path / "results.json").read_text())
    e4 = judged["pairs"]["ftp"][0]["arm"]["E4"]
    assert e4["continuations"] == pending["pairs"]["ftp"][0]["arm"]["E4"]["continuations"]  # not regenerated
    assert len(e4["per_prompt"]["cosine"]) == 4 and "cosine" in e4["mean"]
    assert any(r["claim"] == "coherence" for r in judged["rows"])
    assert judged["coherence_calibration"]["n_prompts"] == 4


def test_experiment_files_parse_and_pair_their_arms():
    from pathlib import Path

    from futuretoken.demo import demo_study

    root = Path(__file__).parent.parent / "configs" / "experiments"
    cpu, gpu, demo = Study.load(root / "cpu.toml"), Study.load(root / "gpu.toml"), demo_study()
    for study, seeds in ((cpu, 3), (gpu, 5), (demo, 1)):
        assert len(study.settings.seeds) >= seeds
        assert study.settings.baseline == "gpt" and "ftp" in study.arms
        runs = [study.run_config(arm, 0, Path("x")) for arm in study.arms]
        assert {r.train.model for r in runs} == ({"gpt", "ftp", "mtp", "mtp_seq"} if study is gpu else {"gpt", "ftp"})
        assert len({(r.train.max_steps, r.train.batch_size, r.train.lr) for r in runs}) == 1  # same budget
    ablation = Study.load(root / "cpu-decoder-start.toml")  # re-uses cpu.toml's runs: same configs
    assert all(ablation.run_config(arm, s, Path("x")) == cpu.run_config(arm, s, Path("x"))
               for arm in cpu.arms for s in cpu.settings.seeds) and ablation.settings.seeds == cpu.settings.seeds
    assert ablation.run_config("ftp-learned", 0, Path("x")).model.decoder_start == "learned"
    learned = gpu.run_config("ftp-learned", 0, Path("x"))
    assert learned.model.decoder_start == "learned" and gpu.run_config("ftp", 0, Path("x")).model.decoder_start == "current"
    assert not gpu.suite.of(COHERENCE).judge  # the judge's weights do not travel to the GPU machine
    assert cpu.suite.experiments["future_bag"].windows == 512 and cpu.suite.experiments["classification"].pools == ("mean",)
    assert cpu.tasks is not None and gpu.tasks is not None and gpu.tasks.pathstar


def test_parallel_measurements_equal_sequential_ones(trained_runs, tmp_path):
    runs = {"gpt": {0: trained_runs / "gpt"}, "ftp": {0: trained_runs / "ftp"}}
    compare_runs(runs, "gpt", tmp_path / "one", TOY_SUITE, device="cpu", workers=1)
    compare_runs(runs, "gpt", tmp_path / "two", TOY_SUITE, device="cpu", workers=2)
    one, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("one", "two"))
    assert one["pairs"] == two["pairs"] and one["rows"] == two["rows"] and one["floors"] == two["floors"]


def test_suite_tables_name_their_experiment_and_old_keys_say_where_they_moved():
    with pytest.raises(ConfigError, match=r"suite.probe_windows is now 'windows' in \[suite.future_bag\]"):
        SuiteSettings.from_dict({"probe_windows": 8})
    with pytest.raises(ConfigError, match=r"unknown key 'windos' in \[suite.future_bag\]; did you mean 'windows'"):
        SuiteSettings.from_dict({"future_bag": {"windos": 8}})
    with pytest.raises(ConfigError, match=r"unknown key 'smoothnes' in \[suite\]"):
        SuiteSettings.from_dict({"smoothnes": {"min_windows": 8}})


def test_margins_are_fixed_in_the_experiment_file_with_their_reasons():
    from pathlib import Path

    root = Path(__file__).parent.parent / "configs" / "experiments"
    for name in ("cpu.toml", "gpu.toml", "cpu-decoder-start.toml"):
        margins = Study.load(root / name).margins
        assert set(margins) == {"smoothness", "coherence", "topic_in_domain", "topic_bbc", "sentiment", "future_bag"}
        assert all(m.value > 0 and len(m.reason) > 20 for m in margins.values())
    base = {"model": {"preset": "tiny"}, "data": {"dir": "x"}}
    with pytest.raises(ConfigError, match="\\[margins\\] names 'smoothnes', which no experiment claims"):
        Study.from_dict({**base, "margins": {"smoothnes": {"value": 0.1, "reason": "because"}}})
    with pytest.raises(ConfigError, match="margins.smoothness.reason is empty"):
        Study.from_dict({**base, "margins": {"smoothness": {"value": 0.1, "reason": " "}}})
    with pytest.raises(ConfigError, match="margins.smoothness.value = 0: give a number > 0"):
        Study.from_dict({**base, "margins": {"smoothness": {"value": 0, "reason": "because"}}})


def test_an_arm_may_train_fewer_seeds_than_the_baseline():
    base = {"model": {"preset": "tiny"}, "data": {"dir": "x"}, "experiment": {"seeds": [0, 1, 2]}}
    arms = {"gpt": {"train": {"model": "gpt"}}, "mtp": {"train": {"model": "mtp"}, "seeds": [0, 1]}}
    assert Study.from_dict({**base, "arms": arms}).seeds_of("mtp") == (0, 1)
    with pytest.raises(ConfigError, match=r"arms.mtp.seeds = \[0, 5\] must be a non-empty subset"):
        Study.from_dict({**base, "arms": {**arms, "mtp": {**arms["mtp"], "seeds": [0, 5]}}})
    with pytest.raises(ConfigError, match="the baseline arm 'gpt' trains every seed"):
        Study.from_dict({**base, "arms": {**arms, "gpt": {**arms["gpt"], "seeds": [0]}}})
