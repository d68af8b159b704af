"""Metrics with known answers: smoothness, the matched-loss picker, verdicts, the future probe."""

import math

import numpy as np
import pytest
import torch

import futuretoken as ft
from conftest import tiny_config
from futuretoken.eval.matched import pick_matched_pair
from futuretoken.eval.paper import _verdict
from futuretoken.eval.smoothness import adjacent_cosine


def test_adjacent_cosine_on_constructed_vectors():
    d = 8
    constant = torch.ones(1, 5, d)
    assert torch.allclose(adjacent_cosine(constant), torch.ones(1, 4))
    alternating = torch.stack([torch.eye(d)[i % 2] for i in range(6)])[None]  # e0, e1, e0, ...: orthogonal steps
    assert torch.allclose(adjacent_cosine(alternating), torch.zeros(1, 5))
    flipping = torch.stack([(-1) ** i * torch.eye(d)[0] for i in range(4)])[None]
    assert torch.allclose(adjacent_cosine(flipping), -torch.ones(1, 3))
    # A shared offset makes raw cosine look smooth; centring removes it.
    offset = alternating + 10 * torch.ones(d)
    assert adjacent_cosine(offset).min() > 0.9
    centred = adjacent_cosine(offset, mean=offset.reshape(-1, d).mean(0))
    assert torch.allclose(centred, -torch.ones(1, 5), atol=1e-5)


def test_matched_pair_takes_the_weaker_runs_best_checkpoint():
    ftp = {100: 6.0, 200: 5.0, 300: 4.6}
    gpt = {100: 5.5, 200: 4.8, 300: 4.2, 400: 4.0}
    pair = pick_matched_pair(ftp, gpt)
    assert (pair.step_a, pair.step_b) == (300, 200)  # FTP's best (4.6) is matched by GPT's 4.8 checkpoint
    assert math.isclose(pair.gap, 0.2)
    swapped = pick_matched_pair(gpt, ftp)
    assert (swapped.step_a, swapped.step_b) == (200, 300)
    with pytest.raises(ValueError, match="at least one"):
        pick_matched_pair({}, gpt)


def test_verdict_needs_two_standard_errors():
    assert _verdict(0.05, 0.01) == "reproduced"
    assert _verdict(-0.05, 0.01) == "not reproduced"
    assert _verdict(0.01, 0.01) == "inconclusive at this scale"
    assert _verdict(-0.05, 0.01, higher_is_better=False) == "reproduced"


def test_future_probe_learns_only_its_own_weights():
    from futuretoken.eval.future_probe import train_future_probe

    model = ft.GPT(tiny_config(vocab_size=16, block_size=16))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # A periodic sequence: the future is fully determined by the present, so a probe can learn it.
    tokens = np.tile(np.arange(16), 200)
    result = train_future_probe(model, tokens, tokens, steps=60, batch_size=8, lr=1e-2, eval_batches=2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert len(result["per_distance"]) == model.config.horizon
    assert max(result["per_distance"]) < math.log(16) - 0.5  # well below chance


def test_experiment_files_parse_and_the_cpu_one_is_the_demo():
    from pathlib import Path

    from futuretoken.demo import demo_experiment
    from futuretoken.reproduce import Experiment

    root = Path(__file__).parent.parent / "configs" / "experiments"
    cpu, gpu = Experiment.load(root / "cpu.toml"), Experiment.load(root / "gpu.toml")
    demo = demo_experiment()
    assert cpu.suite == demo.suite
    assert cpu.run.to_dict() == demo.run.to_dict()
    assert cpu.tasks is not None and gpu.tasks is not None and gpu.run.model.n_embd == 384
