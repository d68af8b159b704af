"""Compare trained arms at matched next-token loss, seed by seed, and write the report.

`runs[arm][seed]` are run folders; `baseline` names the arm every other arm is compared with.
For each other arm and seed, the matched checkpoint pair is the baseline run's and the arm's
run's kept checkpoints (train.keep_every) whose next-token losses on the *selection* half of
the validation split are matched (eval/matched.py); the pair is then measured on the *report*
half and the shared items (eval/suite.py).

The work is a list of independent jobs (selection losses of a run, measurements of a
checkpoint, random-init floors, gate 2 along a run), each cached under OUT/cache as JSON: an
interrupted comparison continues where it stopped, and with `workers` > 1 the jobs run in
that many processes at once. E4's judge runs in this process, once per measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

from ..checkpoint import (
    checkpoint_name,
    checkpoint_step,
    list_checkpoints,
    load_model,
    output_dir,
    read_metrics,
    run_data_dir,
)
from ..config import ModelConfig
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

    def has(self, name: str) -> bool:
        return (self.root / f"{name}.json").is_file()

    def get(self, name: str):
        return json.loads((self.root / f"{name}.json").read_text())

    def put(self, name: str, value):
        atomic_write(self.root / f"{name}.json", json.dumps(value))
        return value


@dataclass(frozen=True)
class Job:
    kind: str  # "selection" (a run) | "state" (a run) | "measure" (a checkpoint) | "floor" (a checkpoint's shape)
    name: str  # its cache entry
    target: str  # the run or checkpoint folder
    init_seed: int = 0  # "floor": the random initialisation


def run_job(job: Job, data: EvalData, settings: SuiteSettings, device) -> dict:
    if job.kind == "selection":
        return {str(checkpoint_step(c)): selection_loss(load_model(c, device), data)
                for c in list_checkpoints(job.target)}
    if job.kind == "state":  # gate 2 along training: the loss rise when h_t is replaced, per kept checkpoint
        windows = data.report[: 16 * settings.trajectory_batches]
        return {str(checkpoint_step(c)): state_ablation(load_model(c, device), windows, seed=settings.seed)["increase"]
                for c in list_checkpoints(job.target)}
    if job.kind == "measure":
        return measure(load_model(job.target, device), data, settings)
    return measure_floor(load_model(job.target, device), data, settings, job.init_seed)


_WORKER: dict = {}


def _worker_init(data_args: tuple, settings: SuiteSettings, device: str) -> None:
    import torch

    torch.set_num_threads(1)  # one thread per process: small models use more poorly, the processes share the cores
    _WORKER.update(data=EvalData.build(*data_args, settings), settings=settings, device=device)


def _worker_run(job: Job) -> dict:
    return run_job(job, _WORKER["data"], _WORKER["settings"], _WORKER["device"])


def run_jobs(jobs: list[Job], cache: Cache, data: EvalData, data_args: tuple, settings: SuiteSettings,
             device, workers: int) -> None:
    """Compute every job whose result is not cached yet, in `workers` processes when > 1."""
    todo = [j for j in dict.fromkeys(jobs) if not cache.has(j.name)]
    if workers <= 1 or len(todo) <= 1:
        for job in todo:
            cache.put(job.name, run_job(job, data, settings, device))
        return
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init,
                             initargs=(data_args, settings, str(device))) as pool:
        futures = {pool.submit(_worker_run, job): job for job in todo}
        for future in tqdm(futures, desc="measurements", unit="job"):
            cache.put(futures[future].name, future.result())


def _run_info(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "run.json").read_text())


def _floor_shape(info: dict) -> str:
    """Arms whose untrained models are identical share a floor (the decoder's start vector starts at zero)."""
    model = {k: v for k, v in info["model"].items() if k != "decoder_start"}
    return f"{info['model_type']}-{hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:10]}"


def compare_runs(runs: Mapping[str, Mapping[int, Path]], baseline: str, out_dir: str | Path,
                 settings: SuiteSettings | None = None, gates: C.GateSettings | None = None,
                 device: str = "auto", judge=None, tasks: dict | None = None, workers: int = 1) -> Path:
    """Measure every matched pair, run the gates and the statistics, write report.md, results.json, plots."""
    settings, gates = settings or SuiteSettings(), gates or C.GateSettings()
    out_dir, device = output_dir(out_dir, "--out folder"), resolve_device(device)  # before the work
    if baseline not in runs or len(runs) < 2:
        raise ValueError(f"need the baseline arm {baseline!r} and at least one other arm; got {sorted(runs)}")
    seeds = sorted(runs[baseline])
    for arm, by_seed in runs.items():
        if sorted(by_seed) != seeds:
            raise ValueError(f"arm {arm!r} has seeds {sorted(by_seed)}, the baseline {seeds}: the comparison is paired")
    infos = {arm: {s: _run_info(r) for s, r in by_seed.items()} for arm, by_seed in runs.items()}
    data_dirs = {str(run_data_dir(r)) for by_seed in runs.values() for r in by_seed.values()}
    if len(data_dirs) != 1:
        raise ValueError(f"the runs were trained on different data {sorted(data_dirs)}; compare runs of one corpus")
    first = {arm: infos[arm][seeds[0]] for arm in runs}
    # E2's future bags span the longest horizon among the arms (4 when every arm is a GPT).
    horizon = max([i["model"]["horizon"] for i in first.values() if i["model_type"] != "gpt"], default=4)
    data_args = (data_dirs.pop(), first[baseline]["model"]["block_size"], horizon)
    data = EvalData.build(*data_args, settings)
    cache = Cache(out_dir / "cache")
    jobs = lambda todo: run_jobs(todo, cache, data, data_args, settings, device, workers)  # noqa: E731

    jobs([Job("selection", f"selection-{arm}-s{seed}", str(runs[arm][seed])) for arm in runs for seed in seeds])
    losses = {arm: {seed: {int(k): v for k, v in cache.get(f"selection-{arm}-s{seed}").items()} for seed in seeds}
              for arm in runs}
    matched = {arm: {seed: pick_matched_pair(losses[arm][seed], losses[baseline][seed]) for seed in seeds}
               for arm in runs if arm != baseline}
    measure_name = lambda arm, seed, step: f"measure-{arm}-s{seed}-{step}"  # noqa: E731
    checkpoint = lambda arm, seed, step: str(Path(runs[arm][seed]) / "checkpoints" / checkpoint_name(step))  # noqa: E731
    todo = []
    for arm, by_seed in matched.items():
        for seed, pair in by_seed.items():
            todo += [Job("measure", measure_name(arm, seed, pair.step_a), checkpoint(arm, seed, pair.step_a)),
                     Job("measure", measure_name(baseline, seed, pair.step_b), checkpoint(baseline, seed, pair.step_b))]
    shapes = {_floor_shape(first[arm]): arm for arm in runs}
    todo += [Job("floor", f"floor-{shape}-{fs}", str(list_checkpoints(runs[arm][seeds[0]])[-1]), fs)
             for shape, arm in shapes.items() for fs in settings.floor_seeds]
    ftp_arms = [arm for arm in runs if first[arm]["model_type"] == "ftp"]
    todo += [Job("state", f"state-{arm}-s{seed}", str(runs[arm][seed])) for arm in ftp_arms for seed in seeds]
    jobs(todo)

    judging = data.coherence is not None and settings.coherence_judge
    if judging and judge is None:
        from .coherence import minilm_judge

        judge = minilm_judge()

    def measured(arm: str, seed: int, step: int) -> dict:
        name = measure_name(arm, seed, step)
        result = cache.get(name)
        if judging and score_coherence(result, data, settings, judge):
            cache.put(name, result)  # the continuations are judged once, maybe long after they were written
        return result

    pairs = {}
    for arm, by_seed in matched.items():
        pairs[arm] = []
        for seed, pair in by_seed.items():
            m_arm, m_base = measured(arm, seed, pair.step_a), measured(baseline, seed, pair.step_b)
            pairs[arm].append((m_arm, m_base, C.pair_gates(m_arm, m_base, data.ngram, gates)))
    rows = C.claim_rows(pairs) + (C.task_rows(tasks, baseline, gates) if tasks else [])
    C.finish_verdicts(rows, gates.alpha)

    results = {
        "baseline": baseline, "seeds": seeds,
        "arms": {arm: {"model_type": i["model_type"], "model": i["model"],
                       "train": {k: i["train"][k] for k in ("max_steps", "batch_size", "lr", "grad_accum")},
                       "train_flops_per_token": training_flops_per_token(ModelConfig(**i["model"]), i["model_type"])}
                 for arm, i in first.items()},
        "settings": asdict(settings), "gates": asdict(gates), "ngram": data.ngram, "token_r2": data.bags.token_r2,
        "matched": {arm: {seed: {"step": p.step_a, "baseline_step": p.step_b, "selection_loss": p.loss_a,
                                 "baseline_selection_loss": p.loss_b} for seed, p in by_seed.items()}
                    for arm, by_seed in matched.items()},
        "pairs": {arm: [{"ftp": p[0], "gpt": p[1], "gates": p[2]} for p in ps] for arm, ps in pairs.items()},
        "rows": rows,
        "floors": {arm: [cache.get(f"floor-{shape}-{fs}") for fs in settings.floor_seeds]
                   for shape, arm in shapes.items()},
        "state_use_trajectory": {arm: {seed: _trajectory(cache.get(f"state-{arm}-s{seed}")) for seed in seeds}
                                 for arm in ftp_arms},
        "curves": {arm: {seed: _curve(runs[arm][seed], losses[arm][seed]) for seed in seeds} for arm in runs},
        "tasks": tasks,
    }
    if judging:
        if not cache.has("coherence-calibration"):
            cache.put("coherence-calibration", coherence_calibration(
                data.coherence, data.tokenizer, judge, settings.coherence_window, settings.seed))
        results["coherence_calibration"] = cache.get("coherence-calibration")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    plot_comparison(results, out_dir)
    report = out_dir / "report.md"
    report.write_text(render_report(results))
    return report


def _trajectory(per_step: dict) -> dict:
    steps = sorted(per_step, key=int)
    return {"steps": [int(s) for s in steps],
            **{k: [per_step[s][k] for s in steps] for k in ("mean_state", "shuffled_state")}}


def _curve(run_dir: Path, selection: dict[int, float]) -> dict:
    """Validation next-token loss logged during training, and the selection losses of kept checkpoints."""
    val = [r for r in read_metrics(run_dir) if r["split"] == "val"]
    return {"steps": [r["step"] for r in val], "val_loss": [r["next_token_loss"] for r in val],
            "tokens": [r["tokens"] for r in val],
            "checkpoints": sorted(selection), "selection_loss": [selection[s] for s in sorted(selection)]}

