"""Compare trained arms at matched next-token loss, seed by seed, and write the report.

`runs[arm][seed]` are run folders; `baseline` names the arm every other arm is compared with.
For each other arm and seed, the matched checkpoint pair is the baseline run's and the arm's
run's kept checkpoints (train.keep_every) whose next-token losses on the *selection* half of
the validation split are matched (eval/matched.py); the pair is then measured on the *report*
half and the shared items (eval/suite.py). Every measurement is cached under OUT/cache, so an
interrupted comparison continues where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

from ..checkpoint import checkpoint_name, checkpoint_step, list_checkpoints, load_model, run_data_dir
from ..devices import resolve_device
from ..files import atomic_write
from ..model import training_flops_per_token
from . import claims as C
from .coherence import coherence_calibration
from .matched import pick_matched_pair
from .render import plot_comparison, render_report
from .state_use import state_ablation
from .suite import EvalData, SuiteSettings, measure, measure_floor, score_coherence, selection_loss


class Cache:
    """JSON results under OUT/cache/NAME.json: computed once, read back on a later call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def get(self, name: str, compute):
        path = self.root / f"{name}.json"
        if path.is_file():
            return json.loads(path.read_text())
        return self.put(name, compute())

    def put(self, name: str, value):
        atomic_write(self.root / f"{name}.json", json.dumps(value))
        return value


def _run_info(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def compare_runs(runs: Mapping[str, Mapping[int, Path]], baseline: str, out_dir: str | Path,
                 settings: SuiteSettings | None = None, gates: C.GateSettings | None = None,
                 device: str = "auto", judge=None, tasks: dict | None = None) -> Path:
    """Measure every matched pair, run the gates and the statistics, write report.md, results.json, plots."""
    settings, gates = settings or SuiteSettings(), gates or C.GateSettings()
    out_dir, device = Path(out_dir), resolve_device(device)
    if baseline not in runs or len(runs) < 2:
        raise ValueError(f"need the baseline arm {baseline!r} and at least one other arm; got {sorted(runs)}")
    seeds = sorted(runs[baseline])
    for arm, by_seed in runs.items():
        if sorted(by_seed) != seeds:
            raise ValueError(f"arm {arm!r} has seeds {sorted(by_seed)}, the baseline {seeds}: the comparison is paired")
    infos = {arm: {s: _run_info(Path(r)) for s, r in by_seed.items()} for arm, by_seed in runs.items()}
    data_dirs = {str(run_data_dir(r)) for by_seed in runs.values() for r in by_seed.values()}
    if len(data_dirs) != 1:
        raise ValueError(f"the runs were trained on different data {sorted(data_dirs)}; compare runs of one corpus")
    configs = [i["model"] for by_seed in infos.values() for i in by_seed.values()]
    # E2's future bags span the longest horizon among the arms (4 when every arm is a GPT).
    horizon = max([i["model"]["horizon"] for b in infos.values() for i in b.values() if i["model_type"] != "gpt"],
                  default=4)
    cache = Cache(out_dir / "cache")
    data = EvalData.build(data_dirs.pop(), configs[0]["block_size"], horizon, settings)
    if data.coherence is not None and settings.coherence_judge and judge is None:
        from .coherence import minilm_judge

        judge = minilm_judge()
    judging = data.coherence is not None and settings.coherence_judge

    def checkpoint_losses(arm: str, seed: int) -> dict[int, float]:
        run = Path(runs[arm][seed])
        values = cache.get(f"selection-{arm}-s{seed}", lambda: {
            str(checkpoint_step(c)): selection_loss(load_model(c, device), data) for c in list_checkpoints(run)})
        return {int(k): v for k, v in values.items()}

    def measured(arm: str, seed: int, step: int) -> dict:
        ckpt, name = Path(runs[arm][seed]) / "checkpoints" / checkpoint_name(step), f"measure-{arm}-s{seed}-{step}"
        result = cache.get(name, lambda: measure(load_model(ckpt, device), data, settings))
        if judging and score_coherence(result, data, settings, judge):
            cache.put(name, result)  # the continuations are judged once, maybe long after they were written
        return result

    pairs, matched = {}, {}
    for arm in runs:
        if arm == baseline:
            continue
        pairs[arm], matched[arm] = [], {}
        for seed in seeds:
            pair = pick_matched_pair(checkpoint_losses(arm, seed), checkpoint_losses(baseline, seed))
            m_arm, m_base = measured(arm, seed, pair.step_a), measured(baseline, seed, pair.step_b)
            pairs[arm].append((m_arm, m_base, C.pair_gates(m_arm, m_base, data.ngram, gates)))
            matched[arm][seed] = {"step": pair.step_a, "baseline_step": pair.step_b, "selection_loss": pair.loss_a,
                                  "baseline_selection_loss": pair.loss_b}
    rows = C.claim_rows(pairs) + (C.task_rows(tasks, baseline, gates) if tasks else [])
    C.finish_verdicts(rows, gates.alpha)

    floors, shapes = {}, set()
    for arm in runs:  # the untrained floor of each model shape (arms differing only in training share it)
        info = infos[arm][seeds[0]]
        shape = (info["model_type"], json.dumps(info["model"], sort_keys=True))
        if shape in shapes:
            continue
        shapes.add(shape)
        model = load_model(list_checkpoints(runs[arm][seeds[0]])[-1], device)
        floors[arm] = [cache.get(f"floor-{arm}-{fs}", lambda fs=fs: measure_floor(model, data, settings, fs))
                       for fs in settings.floor_seeds]
    trajectory = {arm: {seed: state_use_trajectory(runs[arm][seed], data, settings, cache, f"{arm}-s{seed}", device)
                        for seed in seeds}
                  for arm in runs if infos[arm][seeds[0]]["model_type"] == "ftp"}
    results = {
        "baseline": baseline, "seeds": seeds, "arms": {arm: {
            "model_type": infos[arm][seeds[0]]["model_type"], "model": infos[arm][seeds[0]]["model"],
            "train": {k: infos[arm][seeds[0]]["train"][k] for k in ("max_steps", "batch_size", "lr", "grad_accum")},
            "train_flops_per_token": _flops(infos[arm][seeds[0]])} for arm in runs},
        "settings": asdict(settings), "gates": asdict(gates), "ngram": data.ngram, "token_r2": data.bags.token_r2,
        "matched": matched, "pairs": {arm: [{"ftp": p[0], "gpt": p[1], "gates": p[2]} for p in ps]
                                      for arm, ps in pairs.items()},
        "rows": rows, "floors": floors, "state_use_trajectory": trajectory,
        "curves": {arm: {seed: _curve(runs[arm][seed], checkpoint_losses(arm, seed)) for seed in seeds} for arm in runs},
        "tasks": tasks,
    }
    if judging:
        results["coherence_calibration"] = cache.get("coherence-calibration", lambda: coherence_calibration(
            data.coherence, data.tokenizer, judge, settings.coherence_window, settings.seed))
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_comparison(results, out_dir)
    report = out_dir / "report.md"
    report.write_text(render_report(results))
    return report


def _flops(info: dict) -> float:
    from ..config import ModelConfig

    return training_flops_per_token(ModelConfig(**info["model"]), info["model_type"])


def _curve(run_dir: Path, selection: dict[int, float]) -> dict:
    """Validation next-token loss logged during training, and the selection losses of kept checkpoints."""
    from .render import read_metrics

    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    return {"steps": [r["step"] for r in val], "val_loss": [r["next_token_loss"] for r in val],
            "tokens": [r["tokens"] for r in val],
            "checkpoints": sorted(selection), "selection_loss": [selection[s] for s in sorted(selection)]}


def state_use_trajectory(run_dir: Path, data: EvalData, settings: SuiteSettings, cache: Cache, name: str,
                         device) -> dict:
    """Gate 2 along training: the loss increase when h_t is replaced, at every kept checkpoint."""
    windows = data.report[: 16 * settings.trajectory_batches]
    out = {"steps": [], "mean_state": [], "shuffled_state": []}
    for ckpt in list_checkpoints(run_dir):
        step = checkpoint_step(ckpt)
        r = cache.get(f"state-{name}-{step}", lambda ckpt=ckpt: {
            k: v for k, v in state_ablation(load_model(ckpt, device), windows, seed=settings.seed)["increase"].items()})
        out["steps"].append(step)
        for k in ("mean_state", "shuffled_state"):
            out[k].append(r[k])
    return out

