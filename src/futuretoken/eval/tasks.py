"""Scoring the toy tasks (E6 countdown as code, E7 path-star; eval/registry.py TASKS): every arm and
seed is trained on the same generated stream (study/tasks.py), then scored problem by problem.

- Budget: `max_steps` is sized by a pilot so that the baseline is clearly off the floor
  (pass@1 >= the gate's `task_floor`) at the easiest setting; otherwise the task's claims are
  invalid at this scale.
- Problems: `n_eval` unique held-out problems per setting (countdown: specs of the evaluation
  split, never in the training stream; path-star: random graphs from a separate seed).
- Matched loss (the headline, as for every other claim): the arm's and the baseline's checkpoints
  whose next-token loss on the answers of the held-out problems (the task's own loss: the program
  or path tokens after the prompt) is matched. Which checkpoints are candidates is a
  `TaskCheckpoints` strategy: the kept checkpoints of cosine runs here (eval/matched.py's rule),
  annealed ones (run ends and cooldowns) for warmup-stable-decay runs (study/tasks.py).
- Equal tokens: every arm at its last checkpoint (the same number of training tokens).
  Equal compute: each non-baseline arm also at its checkpoint whose training FLOPs are closest
  to (not above) the baseline's at the end of training (the same strategy picks it).
Results per arm, setting and seed: pass@1 and the per-problem outcomes (for McNemar's test).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from ..checkpoint import checkpoint_step, list_checkpoints, load_model
from ..config import RunConfig
from ..model import training_flops_per_token
from ..storage import atomic_write
from ..training.cooldown import COOLDOWNS
from .matched import MatchedPair, pick_matched_pair


@dataclass
class TaskSettings:
    countdown: bool = True
    pathstar: bool = True
    documents: int = 20000  # generated training documents per task
    max_steps: int = 1500  # training steps of every arm and seed on each task
    keep_every: int = 250  # kept checkpoints (the equal-compute comparison picks among them)
    block_size: int = 64  # task documents are one short line: a short block trains faster
    n_eval: int = 300  # unique held-out problems per setting
    difficulties: tuple[int, ...] = (2, 3)  # countdown: how many numbers, easiest first
    max_number: int = 40  # countdown: numbers are drawn from 1..max_number
    star_degree: int = 2  # path-star: arms
    star_length: int = 3  # path-star: nodes per arm
    star_labels: int = 100  # path-star: node labels are drawn from 0..star_labels-1
    tokenizer: str = "bpe:512"
    arms: tuple[str, ...] = ()  # the arms trained on the tasks (empty: every arm)
    seed: int = 0


def training_tokens(cfg: RunConfig, steps: int) -> int:
    """Tokens a run of `cfg` has trained on after `steps` optimizer steps (every process together)."""
    return steps * cfg.train.batch_size * cfg.train.grad_accum * cfg.model.block_size


def training_flops(cfg: RunConfig, steps: int) -> float:
    return training_flops_per_token(cfg.model, cfg.train.model) * training_tokens(cfg, steps)


def equal_compute_checkpoint(run_dir: Path, cfg: RunConfig, budget_flops: float) -> Path:
    """The kept checkpoint of `run_dir` with the most training FLOPs not above `budget_flops`."""
    kept = [c for c in list_checkpoints(run_dir) if training_flops(cfg, checkpoint_step(c)) <= budget_flops * 1.0001]
    return (kept or list_checkpoints(run_dir)[:1])[-1]


LossOf = Callable[[Path], float]  # a checkpoint -> its loss on the task's held-out answers


class TaskCheckpoints(Protocol):
    """Which checkpoints of a task's runs are compared."""

    def matched(self, run: Path, base_run: Path, loss_of: LossOf) -> tuple[MatchedPair, Path, Path]:
        """The pair at matched answer loss: (pair, the arm's checkpoint, the baseline's)."""
        ...

    def equal_compute(self, run: Path, cfg: RunConfig, budget_flops: float) -> Path:
        """The arm's checkpoint with the most training FLOPs not above the budget."""
        ...


class KeptCheckpoints:
    """The kept checkpoints of each run, as they are (runs of one cosine schedule each)."""

    def matched(self, run: Path, base_run: Path, loss_of: LossOf) -> tuple[MatchedPair, Path, Path]:
        kept = [{checkpoint_step(c): c for c in list_checkpoints(r)} for r in (run, base_run)]
        pair = pick_matched_pair(*({s: loss_of(c) for s, c in k.items()} for k in kept))
        return pair, kept[0][pair.step_a], kept[1][pair.step_b]

    def equal_compute(self, run: Path, cfg: RunConfig, budget_flops: float) -> Path:
        return equal_compute_checkpoint(run, cfg, budget_flops)


@torch.no_grad()
def answer_loss(model, pairs: list[tuple[str, str]], batch_size: int = 64) -> float:
    """Mean next-token cross-entropy over the answer tokens (answer and newline) of held-out (prompt, answer)
    pairs, each line after end-of-text as in training: the task's own loss, which pairs checkpoints."""
    tok = model.tokenizer
    rows, starts = [], []
    for prompt, answer in pairs:
        head, full = [tok.eot_token, *tok.encode(prompt)], [tok.eot_token, *tok.encode(f"{prompt} {answer}\n")]
        if full[: len(head)] != head:
            raise ValueError(f"the tokenizer merges across the end of the prompt {prompt!r}: its answer has no own tokens")
        rows.append(full)
        starts.append(len(head))
    device, total, count = model.head_weight.device, 0.0, 0
    was_training = model.training
    model.eval()
    try:
        for b in range(0, len(rows), batch_size):
            chunk, first = rows[b : b + batch_size], starts[b : b + batch_size]
            idx = torch.full((len(chunk), max(map(len, chunk))), tok.eot_token)  # (b, L) right-padded
            targets = torch.full_like(idx, -100)  # (b, L): the answer's tokens only
            for r, (row, start) in enumerate(zip(chunk, first)):
                idx[r, : len(row)] = torch.tensor(row)
                targets[r, start - 1 : len(row) - 1] = torch.tensor(row[start:])
            logits = model(idx.to(device)).logits.float()  # (b, L, V)
            total += float(F.cross_entropy(logits.flatten(0, 1), targets.flatten().to(device), reduction="sum"))
            count += int((targets != -100).sum())
    finally:
        model.train(was_training)
    return total / count


def _per_checkpoint(ckpt: Path, what: str, cache: Path, compute: Callable[[], Any]) -> Any:
    """`compute()` of one checkpoint, cached as JSON (a later call, e.g. after an interruption, reads it)."""
    path = cache / f"{_checkpoint_key(ckpt)}{what}.json"
    if path.is_file():
        return json.loads(path.read_text())
    result = compute()
    atomic_write(path, json.dumps(result))
    return result


def _checkpoint_key(ckpt: Path) -> str:
    """ARM-seed-S-step-N; a cooldown's checkpoint (RUN/cooldowns/step-B/checkpoints/step-N): ARM-seed-S-cooldown-step-B-step-N."""
    if ckpt.parents[2].name == COOLDOWNS:
        run = ckpt.parents[3]
        return f"{run.parent.name}-{run.name}-cooldown-{ckpt.parents[1].name}-{ckpt.name}"
    return f"{ckpt.parent.parent.parent.name}-{ckpt.parent.parent.name}-{ckpt.name}"


def _answer_loss_of(ckpt: Path, pairs: list[tuple[str, str]], device: str, cache: Path) -> float:
    return _per_checkpoint(ckpt, "-answer-loss", cache, lambda: answer_loss(load_model(ckpt, device), pairs))


def _outcomes_of(ckpt: Path, outcomes, settings: TaskSettings, device: str, cache: Path) -> dict[str, list[bool]]:
    """Per-problem outcomes of one checkpoint."""
    return _per_checkpoint(ckpt, "", cache, lambda: outcomes(load_model(ckpt, device), settings))


Outcomes = Callable[[object, TaskSettings], dict[str, list[bool]]]


def score_arms(configs: Mapping[str, Mapping[int, RunConfig]], baseline: str, outcomes: Outcomes,
               settings: TaskSettings, device: str, cache: Path,
               answers: list[tuple[str, str]] | None = None, checkpoints: TaskCheckpoints | None = None) -> dict:
    """Every arm and seed at its last checkpoint (equal tokens) and, beside the baseline, at equal compute:
    {"n_eval", "max_steps", "seeds": {arm: [its seeds, in the order of every per-seed list]},
    "pass_at_1": {arm: {setting: [per seed]}}, "correct": per-problem outcomes,
    "equal_compute": {arm: {"steps": [...], setting: [per seed]}}, and with `answers` (held-out prompt,
    answer) "matched_loss": {arm: {"steps", "baseline_steps", "loss", "baseline_loss": [per seed],
    setting: [per seed], "baseline": {setting: [per seed]}}}}."""
    checkpoints = checkpoints or KeptCheckpoints()
    base_cfg = next(iter(configs[baseline].values()))
    base_flops = training_flops(base_cfg, base_cfg.train.max_steps)
    result = {"n_eval": settings.n_eval, "max_steps": settings.max_steps, "seeds": {}, "pass_at_1": {},
              "correct": {}, "equal_compute": {}, **({"matched_loss": {}} if answers is not None else {})}
    for arm, by_seed in configs.items():
        result["seeds"][arm] = sorted(by_seed)
        result["pass_at_1"][arm], result["correct"][arm] = {}, {}
        for seed, cfg in sorted(by_seed.items()):
            run = Path(cfg.train.out_dir)
            solved = _outcomes_of(list_checkpoints(run)[-1], outcomes, settings, device, cache)
            for setting, ok in solved.items():
                result["correct"][arm].setdefault(setting, []).append(ok)
                result["pass_at_1"][arm].setdefault(setting, []).append(sum(ok) / len(ok))
            if arm != baseline and answers is not None:
                _matched_loss_entry(result, arm, baseline, run, Path(configs[baseline][seed].train.out_dir), answers,
                                    outcomes, settings, device, cache, checkpoints)
            if arm != baseline:
                ckpt = checkpoints.equal_compute(run, cfg, base_flops)
                same = _outcomes_of(ckpt, outcomes, settings, device, cache)
                entry = result["equal_compute"].setdefault(arm, {"steps": []})
                entry["steps"].append(checkpoint_step(ckpt))
                for setting, ok in same.items():
                    entry.setdefault(setting, []).append(sum(ok) / len(ok))
    return result


def _matched_loss_entry(result: dict, arm: str, baseline: str, run: Path, base_run: Path,
                        answers: list[tuple[str, str]], outcomes: Outcomes, settings: TaskSettings, device: str,
                        cache: Path, checkpoints: TaskCheckpoints) -> None:
    """One seed of an arm at matched answer loss: the pair of checkpoints (arm, baseline) whose losses
    on the held-out answers match, and both models' pass@1 there."""
    pair, arm_ckpt, base_ckpt = checkpoints.matched(run, base_run, lambda c: _answer_loss_of(c, answers, device, cache))
    entry = result["matched_loss"].setdefault(arm, {"steps": [], "baseline_steps": [], "loss": [],
                                                    "baseline_loss": [], "baseline": {}})
    for key, value in (("steps", pair.step_a), ("baseline_steps", pair.step_b), ("loss", pair.loss_a),
                       ("baseline_loss", pair.loss_b)):
        entry[key].append(value)
    for side, ckpt in (("arm", arm_ckpt), ("baseline", base_ckpt)):
        for setting, ok in _outcomes_of(ckpt, outcomes, settings, device, cache).items():
            target = entry if side == "arm" else entry["baseline"]
            target.setdefault(setting, []).append(sum(ok) / len(ok))
