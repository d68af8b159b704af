"""The measurements taken on one trained model, on items shared by every model compared.

`EvalData.build` fixes, once per comparison, everything the models are measured on: the
selection and report halves of the validation split (eval/windows.py), the report windows
and their n-gram baseline losses (gate 1), the windows of the future-bag probe (E2), the
windows inside documents (E3), the coherence prompts and their calibration (E4). `measure`
then takes E1-E5 and, for FTP, the state-use gate on one model; every per-item result is kept
in item order so that models can be compared item by item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data import TokenShards, load_tokenizer
from .coherence import generate_continuations, score_continuations
from .coherence_items import coherence_items
from .future_bag import FutureBags, future_bag_probe
from .ngram import NgramModel
from .smoothness import smoothness_experiment
from .state_use import next_token_losses, state_ablation
from .windows import document_windows, loss_windows, split_halves


@dataclass
class SuiteSettings:
    eval_batches: int = 20  # E1 / matching / gate 2: batches of 16 windows, from each validation half
    trajectory_batches: int = 4  # gate 2 along training: batches per kept checkpoint
    probe_windows: int = 512  # E2: windows fitting the future-bag probe (selection half) and scoring it (report)
    probe_labels: int = 256  # E2: the most frequent future tokens predicted
    probe_stride: int = 2  # E2: every stride-th position
    smooth_per_document: int = 10  # E3: windows inside held-out documents, at most this many per document
    smooth_min_windows: int = 100
    coherence_prompts: int = 75  # E4: prompts cut from inside held-out documents (0: no E4)
    coherence_prompt_tokens: int = 32
    coherence_new_tokens: int = 64
    coherence_window: int = 16
    coherence_judge: bool = True  # score E4 now (False: generate only; score later where the judge is)
    datasets: tuple[str, ...] = ("brown", "bbc", "rotten_tomatoes")  # E5 labelled sets (empty: no E5)
    labelled_limit: int | None = None  # E5: texts per set (None: each set's default)
    probe_pools: tuple[str, ...] = ("mean", "last")  # E5: poolings probed ("mean" is the claims')
    floor_seeds: tuple[int, ...] = (0, 1, 2)  # random-init floors, one per init seed
    seed: int = 0


@dataclass
class EvalData:
    """What every model of a comparison is measured on (built once)."""

    data_dir: Path
    tokenizer: Any
    block_size: int
    horizon: int  # FTP's N: the span of E2's future bags, the same for every model
    selection: torch.Tensor  # (n, T + 1) windows of the selection half: choose the matched pair
    report: torch.Tensor  # (n, T + 1) windows of the report half: measure it
    ngram: dict[str, float]  # unigram / bigram next-token loss on the report windows
    bags: FutureBags  # E2's probe data: training-split and report-half windows, labels, controls
    smooth: torch.Tensor  # (n, T) windows inside report-half documents
    smooth_docs: np.ndarray  # (n,) their documents
    coherence: list | None = None  # E4 items (eval/coherence_items.py), or None when E4 is off
    extras: dict = field(default_factory=dict)

    @classmethod
    def build(cls, data_dir: str | Path, block_size: int, horizon: int, settings: SuiteSettings) -> "EvalData":
        data_dir = Path(data_dir)
        train, val = TokenShards(data_dir, "train"), TokenShards(data_dir, "val")
        eot, vocab = val.eot_token, val.vocab_size
        halves = split_halves(np.asarray(val.tokens), eot)
        T, s = block_size, settings.seed
        selection = loss_windows(halves["selection"], T + 1, settings.eval_batches, seed=1234 + s)
        report = loss_windows(halves["report"], T + 1, settings.eval_batches, seed=4321 + s)
        ngram = NgramModel.fit(np.asarray(train.tokens), vocab).cross_entropy(report.numpy())
        bags = FutureBags.build(loss_windows(halves["selection"], T + horizon, 1, settings.probe_windows, seed=99 + s),
                                loss_windows(halves["report"], T + horizon, 1, settings.probe_windows, seed=98 + s),
                                horizon, vocab, settings.probe_labels, settings.probe_stride)
        smooth, docs = document_windows(halves["report"], eot, T, settings.smooth_per_document,
                                        settings.smooth_min_windows)
        tokenizer = load_tokenizer(data_dir)
        data = cls(data_dir, tokenizer, T, horizon, selection, report, ngram, bags, smooth, docs)
        if settings.coherence_prompts:
            data.coherence = coherence_items(halves["report"], eot, settings.coherence_prompts,
                                             settings.coherence_prompt_tokens, settings.coherence_new_tokens, seed=s)
        return data


def measure(model, data: EvalData, settings: SuiteSettings) -> dict:
    """E1-E5 (+ the state-use gate for FTP) on one model; JSON-serialisable, per-item lists in item order.
    E4 holds the model's continuations only: `score_coherence` judges them (possibly later, elsewhere)."""
    losses = next_token_losses(model, data.report)
    result: dict = {"model_type": model.model_type,
                    "E1": {"per_window": losses.tolist(), "next_token_loss": float(losses.mean()),
                           "perplexity": math.exp(float(losses.mean()))}}
    if model.model_type == "ftp":
        result["state_use"] = state_ablation(model, data.report, seed=settings.seed)
    result["E2"] = future_bag_probe(model, data.bags)
    result["E3"] = smoothness_experiment(model, data.smooth, data.smooth_docs, seed=settings.seed)
    if data.coherence is not None:
        result["E4"] = {"continuations": generate_continuations(model, data.coherence, settings.seed,
                                                                settings.coherence_new_tokens)}
    if settings.datasets:
        from .classification import measure_classification

        result["E5"] = measure_classification(model, settings)
    return result


def measure_floor(model, data: EvalData, settings: SuiteSettings, seed: int) -> dict:
    """The untrained floor of a model's shape: E2, E3 and E5 (no bag of words) on a random init (`seed`)."""
    from .classification import random_init_like

    floor = random_init_like(model, seed)
    result = {"seed": seed,
              "E2": future_bag_probe(floor, data.bags),
              "E3": smoothness_experiment(floor, data.smooth, data.smooth_docs, seed=settings.seed)}
    if settings.datasets:
        from .classification import measure_classification

        result["E5"] = measure_classification(floor, settings, bag_of_words=False)
    return result


def score_coherence(measurement: dict, data: EvalData, settings: SuiteSettings, judge) -> bool:
    """Judge a measurement's E4 continuations in place; False when there is nothing left to score."""
    e4 = measurement.get("E4")
    if e4 is None or "mean" in e4:
        return False
    e4.update(score_continuations(data.coherence, e4["continuations"], data.tokenizer, judge, settings.coherence_window))
    return True


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
    if data.coherence is not None and settings.coherence_judge:
        from .coherence import minilm_judge

        score_coherence(result, data, settings, judge or minilm_judge())
    (out / "results.json").write_text(json.dumps(result, indent=1))
    return out / "results.json"
