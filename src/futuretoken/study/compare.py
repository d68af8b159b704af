"""Compare trained arms with a baseline at matched next-token loss, seed by seed, and write the report.

`runs[arm][seed]` are run folders; `baseline` names the arm every other arm is compared with.
For each other arm and seed, the matched checkpoint pair is the baseline run's and the arm's
run's kept checkpoints (train.keep_every) whose next-token losses on the *selection* half of
the validation split are matched (eval/matched.py); the pair is then measured on the *report*
half and on the items shared by every model (eval/suite.py), and every registered experiment's
claims become verdict rows (eval/claims.py). The measurements are cached jobs (study/jobs.py);
E4's judge runs in this process, once per measurement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..checkpoint import export_weights, list_checkpoints, output_dir, read_metrics, read_run_record, run_data_dir
from ..config import ModelConfig, RunConfig
from ..devices import resolve_device
from ..eval import claims as C
from ..eval.coherence import EXPERIMENT as COHERENCE
from ..eval.coherence import coherence_calibration
from ..eval.future_bag import EXPERIMENT as FUTURE_BAG
from ..eval.matched import MatchedPair, pick_matched_pair
from ..eval.render import RESULTS_SCHEMA, plot_comparison, render_report
from ..eval.suite import EvalData, SuiteSettings, judging, score_coherence
from ..eval.tasks import training_flops, training_tokens
from ..model import training_flops_per_token
from .annealed import Candidate, anneal_match, annealed_candidates, cosine_candidates
from .jobs import Cache, Job, JobRunner

Runs = Mapping[str, Mapping[int, Path]]  # arm -> seed -> run folder


def _floor_shape(info: dict) -> str:
    """Arms whose untrained models are identical share a floor (the decoder's start vector starts at zero)."""
    model = {k: v for k, v in info["model"].items() if k != "decoder_start"}
    return f"{info['model_type']}-{hashlib.sha256(json.dumps(model, sort_keys=True).encode()).hexdigest()[:10]}"


def check_runs(runs: Runs, baseline: str) -> list[int]:
    """The baseline's seeds; every arm's seeds are among them (the comparison is paired; an arm may
    have fewer, e.g. a costly one), and one corpus for all."""
    if baseline not in runs or len(runs) < 2:
        raise ValueError(f"need the baseline arm {baseline!r} and at least one other arm; got {sorted(runs)}")
    seeds = sorted(runs[baseline])
    for arm, by_seed in runs.items():
        if not by_seed or not set(by_seed) <= set(seeds):
            raise ValueError(f"arm {arm!r} has seeds {sorted(by_seed)}, the baseline {seeds}: the comparison is "
                             "paired, so every seed of an arm needs the baseline's run of that seed")
    data_dirs = {str(run_data_dir(r)) for by_seed in runs.values() for r in by_seed.values()}
    if len(data_dirs) != 1:
        raise ValueError(f"the runs were trained on different data {sorted(data_dirs)}; compare runs of one corpus")
    return seeds


@dataclass
class Comparison:
    runs: Runs
    baseline: str
    seeds: list[int]
    infos: dict[str, dict]  # arm -> run.json of its first seed's run
    settings: SuiteSettings
    gates: C.GateSettings
    data: EvalData
    cache: Cache
    run_jobs: JobRunner
    candidates: dict = field(default_factory=dict)  # arm -> seed -> step -> Candidate (see match)

    @property
    def arms(self) -> list[str]:
        return [arm for arm in self.runs if arm != self.baseline]

    @property
    def schedule(self) -> str:
        """"wsd" when every run is warmup-stable-decay (annealed pairs), else "cosine" (one schedule each)."""
        schedules = {info["train"].get("schedule", "cosine") for info in self.infos.values()}
        if len(schedules) > 1:
            raise ValueError(f"the arms were trained with different schedules {sorted(schedules)}; "
                             "compare runs of one schedule (train.schedule)")
        return schedules.pop()

    def seeds_of(self, arm: str) -> list[int]:
        return sorted(self.runs[arm])

    def checkpoint(self, arm: str, seed: int, step: int) -> str:
        return str(self.candidates[arm][seed][step].checkpoint)

    def match(self, losses: dict) -> dict[str, dict[int, MatchedPair]]:
        """The matched pair of every arm and seed; WSD runs are matched between annealed checkpoints
        (cooldowns trained as needed, study/annealed.py), cosine runs between kept checkpoints."""
        if self.schedule != "wsd":
            for arm in self.runs:
                self.candidates[arm] = {seed: cosine_candidates(Path(self.runs[arm][seed])) for seed in self.seeds_of(arm)}
            return {arm: {seed: pick_matched_pair(losses[arm][seed], losses[self.baseline][seed])
                          for seed in self.seeds_of(arm)} for arm in self.arms}
        matched: dict[str, dict[int, MatchedPair]] = {}
        for arm in self.arms:
            matched[arm] = {}
            for seed in self.seeds_of(arm):
                names = {"arm": arm, "baseline": self.baseline}
                runs = {side: Path(self.runs[name][seed]) for side, name in names.items()}
                matched[arm][seed] = anneal_match(
                    runs, {side: losses[name][seed] for side, name in names.items()},
                    lambda side, folder, seed=seed, names=names: self.end_loss(names[side], seed, folder),
                    tolerance=self.gates.matched_tolerance / 2)
        for arm in self.runs:  # after every match: the baseline's cooldowns serve several arms
            self.candidates[arm] = {seed: annealed_candidates(Path(self.runs[arm][seed])) for seed in self.seeds_of(arm)}
        return matched

    def end_loss(self, arm: str, seed: int, cooldown: Path) -> float:
        """The selection loss of a cooldown's end (a cached job)."""
        name = f"selection-{arm}-s{seed}-cooldown-{cooldown.name}"
        self.run_jobs([Job("selection", name, str(cooldown))])
        losses = self.cache.get(name)
        return losses[max(losses, key=int)]

    def selection_losses(self) -> dict[str, dict[int, dict[int, float]]]:
        """arm -> seed -> kept checkpoint's step -> its next-token loss on the selection half."""
        self.run_jobs([Job("selection", f"selection-{arm}-s{seed}", str(self.runs[arm][seed]))
                       for arm in self.runs for seed in self.seeds_of(arm)])
        return {arm: {seed: {int(k): v for k, v in self.cache.get(f"selection-{arm}-s{seed}").items()}
                      for seed in self.seeds_of(arm)} for arm in self.runs}

    def floor_shapes(self) -> dict[str, str]:
        """One arm per distinct untrained model: shape key -> the arm whose checkpoint stands for it."""
        return {_floor_shape(self.infos[arm]): arm for arm in self.runs}

    def ftp_arms(self) -> list[str]:
        return [arm for arm in self.runs if self.infos[arm]["model_type"] == "ftp"]

    def measure_all(self, matched: dict[str, dict[int, MatchedPair]]) -> None:
        """Every matched checkpoint, the random-init floors and gate 2 along the FTP arms' training."""
        todo = []
        for arm, by_seed in matched.items():
            for seed, pair in by_seed.items():
                todo += [Job("measure", _measure_name(arm, seed, pair.step_a), self.checkpoint(arm, seed, pair.step_a)),
                         Job("measure", _measure_name(self.baseline, seed, pair.step_b),
                             self.checkpoint(self.baseline, seed, pair.step_b))]
        todo += [Job("floor", f"floor-{shape}-{fs}", str(list_checkpoints(self.runs[arm][self.seeds_of(arm)[0]])[-1]), fs)
                 for shape, arm in self.floor_shapes().items() for fs in self.settings.floor_seeds]
        todo += [Job("state", f"state-{arm}-s{seed}", str(self.runs[arm][seed]))
                 for arm in self.ftp_arms() for seed in self.seeds_of(arm)]
        self.run_jobs(todo)

    def measured(self, arm: str, seed: int, step: int, judge) -> dict:
        name = _measure_name(arm, seed, step)
        result = self.cache.get(name)
        if judge is not None and score_coherence(result, self.data, self.settings, judge):
            self.cache.put(name, result)  # the continuations are judged once, maybe long after they were written
        return result

    def pairs(self, matched: dict[str, dict[int, MatchedPair]], judge) -> dict[str, list[dict]]:
        """arm -> per seed {"arm": measurement, "baseline": measurement, "gates": gates 1-3}."""
        pairs = {}
        for arm, by_seed in matched.items():
            pairs[arm] = []
            for seed, pair in by_seed.items():
                a, b = self.measured(arm, seed, pair.step_a, judge), self.measured(self.baseline, seed, pair.step_b, judge)
                pairs[arm].append({"arm": a, "baseline": b, "gates": C.pair_gates(a, b, self.data.ngram, self.gates)})
        return pairs

    def export_models(self, matched: dict[str, dict[int, MatchedPair]], folder: Path) -> dict[str, str]:
        """The compared checkpoints of each arm's first seed, weights only (checkpoint/portable.py), loadable with
        ft.load: FOLDER/ARM-seedS and FOLDER/BASELINE-seedS-matched-to-ARM. Returns name -> what it is."""
        out = {}
        for arm, by_seed in matched.items():
            seed = min(by_seed)
            pair = by_seed[seed]
            for name, side, step in ((f"{arm}-seed{seed}", arm, pair.step_a),
                                     (f"{self.baseline}-seed{seed}-matched-to-{arm}", self.baseline, pair.step_b)):
                export_weights(self.checkpoint(side, seed, step), folder / name)
                out[name] = f"{side}, seed {seed}: {self.candidates[side][seed][step].schedule}"
        return out

    def calibration(self, judge) -> dict:
        """E4's references (real continuation, another document's, word salad), judged once."""
        if not self.cache.has("coherence-calibration"):
            e4 = self.settings.of(COHERENCE)
            self.cache.put("coherence-calibration", coherence_calibration(
                self.data.items[COHERENCE.key], self.data.tokenizer, judge, e4.window, self.settings.seed))
        return self.cache.get("coherence-calibration")


def _measure_name(arm: str, seed: int, step: int) -> str:
    return f"measure-{arm}-s{seed}-{step}"


def _arm_summary(info: dict) -> dict:
    return {"model_type": info["model_type"], "model": info["model"],
            "train": {k: info["train"][k] for k in ("max_steps", "batch_size", "lr", "grad_accum")},
            "train_flops_per_token": training_flops_per_token(ModelConfig(**info["model"]), info["model_type"])}


def _side(candidate: Candidate, info: dict) -> dict:
    """Where a compared checkpoint stands: its steps, tokens, training FLOPs and schedule position."""
    cfg = RunConfig.from_dict({k: info[k] for k in RunConfig.SECTIONS})
    return {"tokens": training_tokens(cfg, candidate.step), "train_flops": training_flops(cfg, candidate.step),
            "schedule": candidate.schedule}


def _matched_summary(cmp: Comparison, matched: dict[str, dict[int, MatchedPair]]) -> dict:
    out = {}
    for arm, by_seed in matched.items():
        out[arm] = {}
        for seed, p in by_seed.items():
            a = _side(cmp.candidates[arm][seed][p.step_a], cmp.infos[arm])
            b = _side(cmp.candidates[cmp.baseline][seed][p.step_b], cmp.infos[cmp.baseline])
            out[arm][seed] = {"step": p.step_a, "baseline_step": p.step_b, "selection_loss": p.loss_a,
                              "baseline_selection_loss": p.loss_b, **a, **{f"baseline_{k}": v for k, v in b.items()}}
    return out


def open_comparison(runs: Runs, baseline: str, out_dir: Path, settings: SuiteSettings, gates: C.GateSettings,
                    device, workers: int) -> Comparison:
    """Check the runs and build what every model is measured on."""
    seeds = check_runs(runs, baseline)
    infos = {arm: read_run_record(by_seed[min(by_seed)]) for arm, by_seed in runs.items()}
    # E2's future bags span the longest horizon among the arms (4 when every arm is a GPT).
    horizon = max([i["model"]["horizon"] for i in infos.values() if i["model_type"] != "gpt"], default=4)
    data_args = (run_data_dir(runs[baseline][seeds[0]]), infos[baseline]["model"]["block_size"], horizon)
    data = EvalData.build(*data_args, settings)
    cache = Cache(out_dir / "cache")
    return Comparison(runs, baseline, seeds, infos, settings, gates, data, cache,
                      JobRunner(cache, data, data_args, settings, device, workers))


def compare_runs(runs: Runs, baseline: str, out_dir: str | Path, settings: SuiteSettings | None = None,
                 gates: C.GateSettings | None = None, device: str = "auto", judge=None, tasks: dict | None = None,
                 workers: int = 1, margins: Mapping[str, C.Margin] | None = None) -> Path:
    """Measure every matched pair, run the gates and the statistics, write report.md, results.json, plots.
    `margins`: claim key -> its minimal effect, fixed before the run (default: each claim's own)."""
    settings, gates = settings or SuiteSettings(), gates or C.GateSettings()
    out_dir, device = output_dir(out_dir, "--out folder"), resolve_device(device)  # before the work
    cmp = open_comparison(runs, baseline, out_dir, settings, gates, device, workers)
    losses = cmp.selection_losses()
    matched = cmp.match(losses)
    cmp.measure_all(matched)
    if judging(cmp.data, settings) and judge is None:
        from ..eval.coherence import minilm_judge

        judge = minilm_judge()
    judge = judge if judging(cmp.data, settings) else None
    pairs = cmp.pairs(matched, judge)
    calibration = cmp.calibration(judge) if judge is not None else None
    results = {
        "schema": RESULTS_SCHEMA, "baseline": baseline, "seeds": cmp.seeds,
        "arms": {arm: _arm_summary(info) for arm, info in cmp.infos.items()},
        "settings": asdict(settings), "gates": asdict(gates), "ngram": cmp.data.ngram,
        "token_r2": cmp.data.items[FUTURE_BAG.key].token_r2 if FUTURE_BAG.key in cmp.data.items else None,
        "schedule": cmp.schedule, "matched": _matched_summary(cmp, matched), "pairs": pairs,
        "floors": {arm: [cmp.cache.get(f"floor-{shape}-{fs}") for fs in settings.floor_seeds]
                   for shape, arm in cmp.floor_shapes().items()},
        "state_use_trajectory": {arm: {seed: _trajectory(cmp.cache.get(f"state-{arm}-s{seed}"))
                                       for seed in cmp.seeds_of(arm)} for arm in cmp.ftp_arms()},
        "curves": {arm: {seed: _curve(runs[arm][seed], losses[arm][seed]) for seed in cmp.seeds_of(arm)} for arm in runs},
        "tasks": tasks,
    }
    if calibration is not None:
        results["coherence_calibration"] = calibration
    results["models"] = cmp.export_models(matched, out_dir / "models")
    return write_comparison(results, out_dir, gates, margins)


def floors_by_arm(results: dict) -> dict[str, list[dict]]:
    """arm -> the random-init measurements of its shape (results["floors"] holds one arm per shape)."""
    by_shape = {_floor_shape(results["arms"][arm]): measured for arm, measured in results["floors"].items()}
    return {arm: by_shape[_floor_shape(info)] for arm, info in results["arms"].items()}


def write_comparison(results: dict, out_dir: Path, gates: C.GateSettings,
                     margins: Mapping[str, C.Margin] | None) -> Path:
    """The verdict rows of `results` (every measurement, no rows yet), then results.json, the plots and report.md."""
    calibration = results.get("coherence_calibration")
    references = {COHERENCE.key: calibration["floor"]} if calibration else {}
    rows = C.claim_rows(results["pairs"], margins=margins, floors=floors_by_arm(results), references=references,
                        baseline=results["baseline"])
    rows += C.task_rows(results["tasks"], results["baseline"], gates, margins) if results.get("tasks") else []
    C.finish_verdicts(rows, gates.alpha)
    results["rows"] = rows
    results["margins"] = {r["claim"]: {"value": r["margin"], "reason": r["margin_reason"]} for r in rows
                          if "margin_reason" in r}
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
