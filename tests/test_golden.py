"""Golden loss curves: a short, exact CPU training run of every model type, compared step by step with
losses committed in tests/golden/loss_curves.json (the torchtitan "loss converging" check, made exact).

What it guards: anything that changes the numbers a training run produces without meaning to, e.g. the
learning-rate schedule (warm-up, cosine decay, min_lr), the loss weighting (FTP's gamma**(k-1), MTP's
heads, MTP-seq's lambda), end-of-text masking, the normalisation over the global batch, gradient
clipping, weight decay groups, AdamW, the initialisation, the batch order of the window sampler, or the
per-process seeding. A refactor that should change none of these must leave this test passing.

How it is exact: the models train in float64 (`train.dtype = "float64"`), with dropout 0, on one CPU
thread, on the `data_dir` corpus of tests/conftest.py (seeded pseudo-random words and a trained BPE
tokenizer: deterministic, and pinned here by its data identity, so a changed corpus or tokenizer fails
with its own message before any loss is compared).

Tolerance: rtol 1e-9 (plus atol 1e-12). float64 carries ~16 significant digits; what can differ between
machines is the summation order inside BLAS / vectorised kernels (AVX2 vs AVX-512, another torch build),
a relative error of ~1e-16 per operation. Measured: the same run on 2 threads (another reduction order)
stays within 4e-16 of the 1-thread losses after 20 steps. The smallest intended changes tried move
the losses by far more: weight_decay 0.1 -> 0.11 by 6e-5 (relative), gamma 0.8 -> 0.81 by 4e-4 (FTP),
lr +1% by 3e-3, min_lr +10% by 2e-3, mtp_lambda 0.3 -> 0.31 by 8e-3 (MTP-seq), one more warm-up step
or a cosine decay over one step more by 1e-2. 1e-9 sits in between with margins of 1e4 or more.

Regenerate (after an intended change, say why in the commit message):

    FUTURETOKEN_REGENERATE_GOLDEN=1 OMP_NUM_THREADS=1 python -m pytest tests/test_golden.py -p no:cacheprovider

writes tests/golden/loss_curves.json (the config used, the torch and Python versions it was produced
with, the corpus's data identity, and for every model type the per-step training losses, the final
validation metrics and every setting the run resolved to, defaults included) and skips the
comparison; run it again without the variable to check.
"""

from __future__ import annotations

import copy
import json
import os
import platform
from pathlib import Path

import numpy as np
import pytest
import torch

from futuretoken.checkpoint import read_metrics
from futuretoken.config import RunConfig
from futuretoken.data import TokenShards
from futuretoken.data.shards import data_identity
from futuretoken.training import train

GOLDEN = Path(__file__).parent / "golden" / "loss_curves.json"
REGENERATE = os.environ.get("FUTURETOKEN_REGENERATE_GOLDEN") == "1"
MODEL_TYPES = ("gpt", "ftp", "mtp", "mtp_seq")
RTOL, ATOL = 1e-9, 1e-12

# Written out in full (not conftest.run_config) so that the golden run does not move when other tests'
# defaults do. data.dir and train.out_dir/model are filled in per run.
CONFIG = {
    "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, "horizon": 3, "pseudo_len": 2,
              "dec_layer": 1, "dec_head": 2, "dropout": 0.0, "gamma": 0.8, "mtp_lambda": 0.3},
    "train": {"batch_size": 4, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5,
              "weight_decay": 0.1, "grad_clip": 1.0, "seed": 0, "dtype": "float64", "device": "cpu",
              "eval_interval": 20, "eval_batches": 2, "ckpt_interval": 20, "log_interval": 20, "keep_last": 1,
              "progress": False},
}


def golden_config(data_dir: Path, out_dir: Path, model: str, config: dict = CONFIG) -> RunConfig:
    values = copy.deepcopy(config)
    values["data"] = {"dir": str(data_dir)}
    values["train"].update(model=model, out_dir=str(out_dir))
    return RunConfig.from_dict(values)


def run_golden(data_dir: Path, root: Path, config: dict = CONFIG) -> dict[str, dict]:
    """Train every model type with `config`; per type: the training losses and final validation metrics."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order for every reduction
    try:
        curves = {}
        for model in MODEL_TYPES:
            cfg = golden_config(data_dir, root / model, model, config)
            result = train(cfg)
            val = [r for r in read_metrics(root / model) if r["split"] == "val"][-1]
            curves[model] = {"losses": result.losses,
                             "val": {k: val[k] for k in ("loss", "next_token_loss", "per_distance")},
                             "resolved_config": resolved(cfg)}
        return curves
    finally:
        torch.set_num_threads(threads)


def resolved(cfg: RunConfig) -> dict:
    """Every setting the run used, defaults and the vocabulary taken from the data included (paths left out):
    on a mismatch, the settings that differ from the golden run's are named."""
    values = cfg.to_dict()
    del values["data"], values["train"]["out_dir"]
    return values


def changed_settings(golden: dict, now: dict) -> str:
    diff = [f"{section}.{key}: {golden[section].get(key, '(absent)')!r} -> {value!r}"
            for section, table in now.items() for key, value in table.items()
            if golden.get(section, {}).get(key, "(absent)") != value]
    return "; settings changed since the golden run: " + ", ".join(diff) if diff else ""


def corpus_identity(data_dir: Path) -> str:
    return data_identity(TokenShards(data_dir, "train", verify=False).manifest)


@pytest.fixture(scope="module")
def golden() -> dict:
    if REGENERATE:
        return {}
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing; write it with FUTURETOKEN_REGENERATE_GOLDEN=1 (see this module's docstring)")
    return json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def curves(data_dir, tmp_path_factory) -> dict[str, dict]:
    return run_golden(data_dir, tmp_path_factory.mktemp("golden"))


def test_regenerate_golden(data_dir, curves):
    if not REGENERATE:
        pytest.skip("set FUTURETOKEN_REGENERATE_GOLDEN=1 to rewrite tests/golden/loss_curves.json")
    GOLDEN.parent.mkdir(exist_ok=True)
    record = {
        "about": "tests/test_golden.py: per-step training losses of a float64, 1-thread CPU run of every model type "
                 "on the conftest data_dir corpus. Regenerate with FUTURETOKEN_REGENERATE_GOLDEN=1 (see the test).",
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "data_sha256": corpus_identity(data_dir),
        "config": CONFIG, "rtol": RTOL, "atol": ATOL, "curves": curves,
    }
    GOLDEN.write_text(json.dumps(record, indent=1) + "\n")
    pytest.skip(f"wrote {GOLDEN}; run again without FUTURETOKEN_REGENERATE_GOLDEN to compare")


def test_golden_records_its_provenance(golden):
    if REGENERATE:
        pytest.skip("regenerating")
    assert golden["config"] == CONFIG, (
        "the test's CONFIG differs from the one the golden file was produced with; regenerate the golden file "
        "(FUTURETOKEN_REGENERATE_GOLDEN=1) if the change is intended")
    assert set(golden["curves"]) == set(MODEL_TYPES)
    assert golden["torch"] and golden["python"]
    for model, curve in golden["curves"].items():
        assert len(curve["losses"]) == CONFIG["train"]["max_steps"], model


def test_corpus_is_the_golden_one(golden, data_dir):
    """The corpus (token ids and tokenizer) is the one the golden curves were trained on: a changed
    data_dir fixture, BPE trainer or preparation fails here, not as a mysterious loss mismatch."""
    if REGENERATE:
        pytest.skip("regenerating")
    assert corpus_identity(data_dir) == golden["data_sha256"], (
        "the conftest data_dir corpus is not the one the golden losses were produced on (its shards or tokenizer "
        f"changed; golden torch {golden['torch']}, here {torch.__version__}). If intended, regenerate the golden file")


@pytest.mark.parametrize("model", MODEL_TYPES)
def test_loss_curve_matches_golden(golden, curves, model):
    if REGENERATE:
        pytest.skip("regenerating")
    expected, got = golden["curves"][model], curves[model]
    assert len(got["losses"]) == len(expected["losses"]) == CONFIG["train"]["max_steps"]
    assert all(np.isfinite(got["losses"]))
    where = (f"{model}: the training run no longer reproduces tests/golden/loss_curves.json (produced with torch "
             f"{golden['torch']}, here {torch.__version__}). If the change is intended, regenerate it "
             "(see tests/test_golden.py)" + changed_settings(expected["resolved_config"], got["resolved_config"]))
    np.testing.assert_allclose(got["losses"], expected["losses"], rtol=RTOL, atol=ATOL, err_msg=where + " [losses]")
    for key in ("loss", "next_token_loss", "per_distance"):
        np.testing.assert_allclose(got["val"][key], expected["val"][key], rtol=RTOL, atol=ATOL,
                                   err_msg=f"{where} [final validation {key}]")


def test_losses_go_down(curves):
    """A sanity check on the golden run itself: 20 steps lower every model's loss (a golden file
    regenerated from a broken trainer would otherwise be accepted)."""
    for model, curve in curves.items():
        losses = curve["losses"]
        assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.1, (model, losses)
