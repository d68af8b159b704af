"""Warmup-stable-decay schedules and cooldown branches: a branch from a stable checkpoint is exactly the
run that would have been that long (same weights, bit for bit), so any stable checkpoint can be annealed."""

import pytest
import torch

import futuretoken as ft
from conftest import WORDS, run_config
from futuretoken.config import ConfigError, TrainConfig
from futuretoken.training import train
from futuretoken.training.cooldown import cooldown_branch, stable_steps
from futuretoken.training.optim import learning_rate


def test_wsd_is_warmup_then_constant_then_a_linear_decay_to_min_lr():
    cfg = TrainConfig(schedule="wsd", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=100, decay_steps=20)
    lrs = [learning_rate(s, cfg) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(lr == 1e-3 for lr in lrs[10:80])  # stable
    assert lrs[80] == pytest.approx(1e-3 - 0.9e-3 / 20) and lrs[99] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(lrs[80:], lrs[81:]))  # decaying
    longer = TrainConfig(schedule="wsd", lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=200, decay_steps=20)
    assert [learning_rate(s, longer) for s in range(80)] == lrs[:80]  # before the decay: independent of length
    assert TrainConfig(schedule="wsd", max_steps=100).decay_steps is None  # default: the last fifth
    with pytest.raises(ConfigError, match="train.decay_steps=95 must lie in 1..max_steps - warmup_steps"):
        TrainConfig(schedule="wsd", max_steps=100, warmup_steps=10, decay_steps=95)
    with pytest.raises(ConfigError, match="train.schedule='linear' is unknown; choose one of cosine, wsd"):
        TrainConfig(schedule="linear")


def test_a_cooldown_branch_is_the_run_that_would_have_been_that_long(data_dir, tmp_path):
    common = dict(schedule="wsd", warmup_steps=2, decay_steps=4, ckpt_interval=2, keep_every=2, eval_interval=2)
    train(run_config(data_dir, tmp_path / "long", max_steps=12, **common))
    assert stable_steps(tmp_path / "long") == [2, 4, 6, 8]  # steps 9-12 decay
    branch = cooldown_branch(tmp_path / "long", 4)
    assert branch.train.max_steps == 8 and branch.train.out_dir == str(tmp_path / "long" / "cooldowns" / "step-0000004")
    train(branch, resume=True)
    train(run_config(data_dir, tmp_path / "short", max_steps=8, **common))  # the same run, 8 steps long
    cooled, direct = ft.load(branch.train.out_dir), ft.load(tmp_path / "short")
    for (name, a), (_, b) in zip(cooled.state_dict().items(), direct.state_dict().items()):
        assert torch.equal(a, b), name
    assert cooldown_branch(tmp_path / "long", 4) == branch  # idempotent: the branch is kept
    with pytest.raises(ValueError, match="no stable checkpoint at step 10"):
        cooldown_branch(tmp_path / "long", 10)
    with pytest.raises(ValueError, match="only a warmup-stable-decay run"):
        train(run_config(data_dir, tmp_path / "cosine", max_steps=4, ckpt_interval=2, keep_every=2))
        cooldown_branch(tmp_path / "cosine", 2)


def test_compare_matches_annealed_checkpoints_and_trains_the_cooldowns_it_needs(data_dir, tmp_path):
    """Two WSD runs of different lengths: the shorter (weaker) run's end fixes the level; the longer run
    is matched by one of its annealed checkpoints, a cooldown trained for the purpose (its own end, at a
    lower loss, is further from the level)."""
    import json

    from futuretoken.study import compare_runs
    from test_reproduce import TOY_SUITE

    common = dict(schedule="wsd", warmup_steps=2, decay_steps=4, ckpt_interval=2, keep_every=2, eval_interval=4,
                  lr=1e-2)
    train(run_config(data_dir, tmp_path / "gpt", "gpt", max_steps=24, **common))
    train(run_config(data_dir, tmp_path / "ftp", "ftp", max_steps=8, **common))
    report = compare_runs({"gpt": {0: tmp_path / "gpt"}, "ftp": {0: tmp_path / "ftp"}}, "gpt", tmp_path / "cmp",
                          TOY_SUITE, device="cpu").read_text()
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    m = results["matched"]["ftp"]["0"]
    assert results["schedule"] == "wsd" and m["schedule"] == "wsd, end of 8 steps"
    assert m["baseline_schedule"].startswith("wsd, cooldown from step"), m
    assert list((tmp_path / "gpt" / "cooldowns").iterdir())  # trained on demand
    assert m["baseline_tokens"] == m["baseline_step"] * 4 * 16 and m["tokens"] == 8 * 4 * 16
    assert "Every compared checkpoint is annealed" in report and "cooldown from step" in report


def test_task_checkpoints_of_wsd_runs_are_annealed_and_cached_apart(data_dir, tmp_path):
    """E6/E7 of warmup-stable-decay runs: the matched pair and the equal-compute checkpoint are run ends
    or cooldown ends (trained on demand), never a stable checkpoint mid-schedule."""
    from futuretoken.eval.tasks import _checkpoint_key, training_flops
    from futuretoken.study.tasks import AnnealedCheckpoints

    common = dict(schedule="wsd", warmup_steps=2, decay_steps=4, ckpt_interval=2, keep_every=2, eval_interval=4,
                  lr=1e-2)
    gpt_cfg = run_config(data_dir, tmp_path / "gpt" / "seed-0", "gpt", max_steps=24, **common)
    train(gpt_cfg)
    train(run_config(data_dir, tmp_path / "ftp" / "seed-0", "ftp", max_steps=8, **common))
    g = torch.Generator().manual_seed(1)  # held-out text like the corpus's: pseudo-random words
    text = " ".join(WORDS[j] for j in torch.randint(0, len(WORDS), (200,), generator=g))
    batch = torch.tensor(ft.load(tmp_path / "gpt" / "seed-0").tokenizer.encode(text)[: 4 * 17]).view(4, 17)

    @torch.no_grad()
    def loss_of(ckpt):
        logits = ft.load(ckpt).eval()(batch[:, :-1]).logits  # (4, 16, V)
        return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()))

    pair, arm_ckpt, base_ckpt = AnnealedCheckpoints(0.0).matched(tmp_path / "ftp" / "seed-0", tmp_path / "gpt" / "seed-0",
                                                                 loss_of)
    assert pair.step_a == 8 and arm_ckpt == tmp_path / "ftp" / "seed-0" / "checkpoints" / "step-0000008"
    assert base_ckpt.parts[-4] == "cooldowns" and pair.step_b == int(base_ckpt.name.removeprefix("step-"))
    assert pair.loss_b == pytest.approx(loss_of(base_ckpt))
    picked = AnnealedCheckpoints(0.0).equal_compute(tmp_path / "gpt" / "seed-0", gpt_cfg, training_flops(gpt_cfg, 13))
    assert picked == tmp_path / "gpt" / "seed-0" / "cooldowns" / "step-0000008" / "checkpoints" / "step-0000012"
    assert _checkpoint_key(picked) == "gpt-seed-0-cooldown-step-0000008-step-0000012"
    assert _checkpoint_key(arm_ckpt) == "ftp-seed-0-step-0000008"


def test_the_next_cooldown_is_planned_from_the_nearest_measured_anneal_drop(data_dir, tmp_path):
    """Early in training a decay lowers the loss more than at the end: once a cooldown is measured, its drop
    (not the run end's) predicts where the next one lands."""
    from futuretoken.study.annealed import plan_cooldown

    common = dict(schedule="wsd", warmup_steps=2, decay_steps=4, ckpt_interval=2, keep_every=2, eval_interval=4)
    train(run_config(data_dir, tmp_path / "gpt", "gpt", max_steps=24, **common))
    stable = {s: 10 - 0.2 * s for s in stable_steps(tmp_path / "gpt")}  # steps 2..20
    assert plan_cooldown(tmp_path / "gpt", stable, 5.0, 7.0, set()) == 10  # the end's drop, 1.0: 10 - 2 - 1 = 7
    # A cooldown from 16 measured a drop of 2.8 (6.8 -> 4.0): the level 7 is reached from 0.2 * s = 0.2, i.e. step 2.
    assert plan_cooldown(tmp_path / "gpt", stable, 5.0, 7.0, set(), cooled={16: 4.0}) == 2
    assert plan_cooldown(tmp_path / "gpt", stable, 5.0, 7.0, {2}, cooled={16: 4.0}) == 4
