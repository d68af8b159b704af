"""The measurements taken on one trained model, on items shared by every model compared.

`EvalData.build` fixes, once per comparison, what every model is measured on: the selection
and report halves of the validation split (eval/windows.py), the report windows and their
n-gram baseline losses (gate 1), and each registered experiment's items (its `prepare`).
`measure` then takes E1, every enabled experiment of eval/registry.py and, for FTP, the
state-use gate on one model; per-item results are kept in item order so that models can be
compared item by item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, build
from ..data import TokenShards, load_tokenizer
from . import coherence, registry
from .experiment import Experiment
from .ngram import NgramModel
from .state_use import next_token_losses, state_ablation
from .windows import loss_windows, split_halves

# Flat [suite] keys of older experiment files -> where they live now.
MOVED = {"probe_windows": "future_bag.windows", "probe_labels": "future_bag.labels",
         "probe_stride": "future_bag.stride", "smooth_per_document": "smoothness.per_document",
         "smooth_min_windows": "smoothness.min_windows", "coherence_prompts": "coherence.prompts",
         "coherence_prompt_tokens": "coherence.prompt_tokens", "coherence_new_tokens": "coherence.new_tokens",
         "coherence_window": "coherence.window", "coherence_judge": "coherence.judge",
         "datasets": "classification.datasets", "labelled_limit": "classification.limit",
         "probe_pools": "classification.pools"}


def _default_experiments() -> dict[str, Any]:
    return {e.name: e.settings() for e in registry.EXPERIMENTS}


@dataclass
class SuiteSettings:
    eval_batches: int = 20  # E1 / matching / gate 2: batches of 16 windows, from each validation half
    trajectory_batches: int = 4  # gate 2 along training: batches per kept checkpoint
    floor_seeds: tuple[int, ...] = (0, 1, 2)  # random-init floors, one per init seed
    seed: int = 0
    experiments: dict[str, Any] = field(default_factory=_default_experiments)  # name -> its settings

    def of(self, experiment: Experiment) -> Any:
        return self.experiments[experiment.name]

    def enabled(self) -> list[Experiment]:
        return [e for e in registry.EXPERIMENTS if e.enabled(self.of(e))]

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "SuiteSettings":
        """From an experiment file's [suite] table; [suite.NAME] sub-tables set experiment NAME's settings."""
        values = dict(values or {})
        for old, new in MOVED.items():
            if old in values:
                table, key = new.split(".")
                raise ConfigError(f"suite.{old} is now '{key}' in [suite.{table}]; move it there")
        experiments = _default_experiments()
        for e in registry.EXPERIMENTS:
            if e.name in values:
                experiments[e.name] = build(e.settings, values.pop(e.name), f"suite.{e.name}")
        settings = build(cls, values, "suite")
        settings.experiments = experiments
        return settings


@dataclass
class EvalData:
    """What every model of a comparison is measured on (built once)."""

    data_dir: Path
    tokenizer: Any
    block_size: int
    horizon: int  # FTP's N: the span of E2's future bags, the same for every model
    eot: int
    vocab: int
    seed: int
    halves: dict[str, np.ndarray]  # "selection" / "report": the validation tokens of each half's documents
    selection: torch.Tensor  # (n, T + 1) windows of the selection half: choose the matched pair
    report: torch.Tensor  # (n, T + 1) windows of the report half: measure it
    ngram: dict[str, float]  # unigram / bigram next-token loss on the report windows
    items: dict[str, Any] = field(default_factory=dict)  # experiment key -> its prepared items

    @classmethod
    def build(cls, data_dir: str | Path, block_size: int, horizon: int, settings: SuiteSettings) -> "EvalData":
        data_dir = Path(data_dir)
        train, val = TokenShards(data_dir, "train"), TokenShards(data_dir, "val")
        halves = split_halves(np.asarray(val.tokens), val.eot_token)
        T, s = block_size, settings.seed
        selection = loss_windows(halves["selection"], T + 1, settings.eval_batches, seed=1234 + s)
        report = loss_windows(halves["report"], T + 1, settings.eval_batches, seed=4321 + s)
        ngram = NgramModel.fit(np.asarray(train.tokens), val.vocab_size).cross_entropy(report.numpy())
        data = cls(data_dir, load_tokenizer(data_dir), T, horizon, val.eot_token, val.vocab_size, s, halves,
                   selection, report, ngram)
        for e in settings.enabled():
            data.items[e.key] = e.prepare(data, settings.of(e)) if e.prepare is not None else None
        return data


def measure(model, data: EvalData, settings: SuiteSettings) -> dict:
    """E1, every enabled experiment (+ the state-use gate for FTP) on one model; JSON-serialisable,
    per-item lists in item order. E4 holds the model's continuations only: `score_coherence` judges them
    (possibly later, elsewhere)."""
    losses = next_token_losses(model, data.report)
    result: dict = {"model_type": model.model_type,
                    "E1": {"per_window": losses.tolist(), "next_token_loss": float(losses.mean()),
                           "perplexity": math.exp(float(losses.mean()))}}
    if model.model_type == "ftp":
        result["state_use"] = state_ablation(model, data.report, seed=settings.seed)
    for e in settings.enabled():
        result[e.key] = e.measure(model, data.items[e.key], settings.of(e), settings.seed)
    return result


def measure_floor(model, data: EvalData, settings: SuiteSettings, seed: int) -> dict:
    """The untrained floor of a model's shape: every experiment that has one, on a random init (`seed`)."""
    from .classification import random_init_like

    floor = random_init_like(model, seed)
    result: dict = {"seed": seed}
    for e in settings.enabled():
        if e.floor is not None:
            result[e.key] = e.floor(floor, data.items[e.key], settings.of(e), settings.seed)
    return result


def score_coherence(measurement: dict, data: EvalData, settings: SuiteSettings, judge) -> bool:
    """Judge a measurement's E4 continuations in place; False when there is nothing left to score."""
    e4 = measurement.get(coherence.EXPERIMENT.key)
    if e4 is None:
        return False
    return coherence.judge_measurement(e4, data.items[coherence.EXPERIMENT.key], data.tokenizer,
                                       settings.of(coherence.EXPERIMENT), judge)


def judging(data: EvalData, settings: SuiteSettings) -> bool:
    """Whether E4's continuations are judged in this process."""
    return coherence.EXPERIMENT.key in data.items and settings.of(coherence.EXPERIMENT).judge


@torch.no_grad()
def selection_loss(model, data: EvalData) -> float:
    """Next-token loss on the selection half: what picks the matched pair."""
    return float(next_token_losses(model, data.selection).mean())


def evaluate_run(run: str | Path, out_dir: str | Path, settings: SuiteSettings | None = None, judge=None,
                 device: str = "auto") -> Path:
    """`futuretoken eval RUN`: the measurements of one run's newest checkpoint -> OUT/results.json."""
    import json
    from dataclasses import asdict

    from ..checkpoint import load_model, output_dir, run_data_dir

    settings = settings or SuiteSettings()
    out = output_dir(out_dir, "--out folder")  # before the work, not after it
    model = load_model(run, device)
    horizon = model.config.horizon if model.model_type != "gpt" else 4
    data = EvalData.build(run_data_dir(run), model.config.block_size, horizon, settings)
    result = {"run": str(run), "settings": asdict(settings), "ngram": data.ngram,
              **measure(model, data, settings)}
    if judging(data, settings):
        from .coherence import minilm_judge

        score_coherence(result, data, settings, judge or minilm_judge())
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return out / "results.json"
