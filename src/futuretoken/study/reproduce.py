"""`futuretoken reproduce --config configs/experiments/X.toml --out DIR`: a whole study.

1. Train every arm (GPT, FTP variants, MTP, MTP-seq) with every seed on the same data
   (resumable: a second call continues unfinished runs and reuses finished ones), several runs
   at once when `experiment.workers` > 1.
2. When [tasks] is present, the toy tasks (E6 countdown as code, E7 path-star): each arm and
   seed trained on the same generated stream, scored per problem (study/tasks.py).
3. Compare every arm with the baseline at matched next-token loss, seed by seed, with the
   validity gates and the statistics (study/compare.py) -> DIR/paper/report.md.
An experiment file is a run config (see configs/) shared by every arm, plus [experiment]
(seeds, baseline, workers), [arms.NAME] (model/train overrides per arm), [gates], [suite]
(eval.suite.SuiteSettings; [suite.NAME] for experiment NAME's own settings) and [tasks]
(eval.tasks.TaskSettings) tables.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..checkpoint import output_dir
from ..config import ConfigError, RunConfig, build, read_toml
from ..devices import resolve_device
from ..eval import registry
from ..eval.claims import GateSettings, Margin
from ..eval.suite import SuiteSettings
from ..eval.tasks import TaskSettings
from ..training import ensure_data, train_all
from .compare import compare_runs
from .pieces import merge_pieces, piece_name
from .tasks import run_tasks

RESERVED = ("paper", "tasks", "pieces")  # OUT/paper: the comparison, OUT/tasks: the toy tasks, OUT/pieces: the
# comparisons of pieces run seed by seed (study/pieces.py); OUT/ARM: the arms' runs


@dataclass
class StudySettings:
    seeds: tuple[int, ...] = (0, 1, 2)  # training seeds: the unit of replication
    baseline: str = "gpt"  # the arm every other arm is compared with
    workers: int = 1  # training runs at once; on CPU each gets cpu_count // workers threads


@dataclass
class Study:
    """An experiment file: arms x seeds trained and compared on one corpus (+ the toy tasks)."""

    run: RunConfig  # shared by every arm; an arm overrides parts of [model] and [train]
    arms: dict[str, dict[str, Any]]  # name -> {"model": {...}, "train": {...}, "seeds": [...] (optional)}
    settings: StudySettings = field(default_factory=StudySettings)
    gates: GateSettings = field(default_factory=GateSettings)
    suite: SuiteSettings = field(default_factory=SuiteSettings)
    tasks: TaskSettings | None = None
    margins: dict[str, Margin] = field(default_factory=dict)  # claim key -> its minimal effect, with the reason

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Study":
        values = dict(values)
        tables = {name: values.pop(name, {}) for name in ("experiment", "arms", "gates", "suite", "margins")}
        tasks = values.pop("tasks", None)
        run = RunConfig.from_dict(values)
        arms = tables["arms"] or {"gpt": {"train": {"model": "gpt"}}, "ftp": {"train": {"model": "ftp"}}}
        for name, arm in arms.items():
            unknown = set(arm) - {"model", "train", "seeds"}
            if unknown:
                raise ConfigError(f"[arms.{name}] may only override [model], [train] and seeds; remove {sorted(unknown)}")
            if name in RESERVED:
                raise ConfigError(f"[arms.{name}]: '{name}' names a folder of the experiment's output; rename the arm")
        settings = build(StudySettings, tables["experiment"], "experiment")
        if settings.baseline not in arms:
            raise ConfigError(f"experiment.baseline = {settings.baseline!r} is not an arm; arms are {sorted(arms)}")
        if not settings.seeds or settings.workers < 1:
            raise ConfigError("experiment.seeds needs at least one seed and experiment.workers must be >= 1")
        for name, arm in arms.items():
            if "seeds" in arm and (not arm["seeds"] or not set(arm["seeds"]) <= set(settings.seeds)):
                raise ConfigError(f"arms.{name}.seeds = {arm['seeds']} must be a non-empty subset of experiment.seeds "
                                  f"{list(settings.seeds)}: each of its seeds is paired with the baseline's")
        if "seeds" in arms[settings.baseline]:
            raise ConfigError(f"the baseline arm '{settings.baseline}' trains every seed of experiment.seeds; "
                              "remove its seeds")
        study = cls(run=run, arms=arms, settings=settings, gates=build(GateSettings, tables["gates"], "gates"),
                    suite=SuiteSettings.from_dict(tables["suite"]),
                    tasks=build(TaskSettings, tasks, "tasks") if tasks is not None else None,
                    margins=_margins(tables["margins"]))
        for arm in arms:  # fail now, not after an hour of training, when an arm's overrides are wrong
            study.run_config(arm, settings.seeds[0], Path("runs"))
        return study

    @classmethod
    def load(cls, path: str | Path) -> "Study":
        return cls.from_dict(read_toml(path))

    def piece(self, seeds: Sequence[int]) -> "Study":
        """The study restricted to `seeds`: one piece of a study too long for one sitting (study/pieces.py).
        An arm none of whose seeds is among them drops out of the piece."""
        if not seeds or not set(seeds) <= set(self.settings.seeds):
            raise ConfigError(f"--seeds {list(seeds)}: choose among experiment.seeds {list(self.settings.seeds)}")
        arms = {}
        for name, arm in self.arms.items():
            kept = [s for s in self.seeds_of(name) if s in seeds]
            if kept:
                arms[name] = {**arm, "seeds": kept} if "seeds" in arm else arm
        return replace(self, arms=arms, settings=replace(self.settings, seeds=tuple(sorted(set(seeds)))))

    def seeds_of(self, arm: str) -> tuple[int, ...]:
        """The arm's training seeds: its own `seeds`, else experiment.seeds."""
        return tuple(self.arms[arm].get("seeds", self.settings.seeds))

    def run_config(self, arm: str, seed: int, out_dir: Path, data_dir: Path | None = None,
                   train_overrides: dict | None = None, model_overrides: dict | None = None) -> RunConfig:
        """The full config of one arm and seed, trained into OUT/arm/seed-S."""
        values = self.run.to_dict()
        values["model"] = {**values["model"], **self.arms[arm].get("model", {}), **(model_overrides or {})}
        values["train"] = {**values["train"], **self.arms[arm].get("train", {}), **(train_overrides or {}),
                           "seed": seed, "out_dir": str(out_dir / arm / f"seed-{seed}")}
        if data_dir is not None:  # a task's own data folder: what it holds, not the experiment's corpus
            values["data"] = {"dir": str(data_dir), "verify": values["data"]["verify"]}
        return RunConfig.from_dict(values)


def _margins(table: dict[str, Any]) -> dict[str, Margin]:
    """[margins]: `CLAIM = { value = 0.02, reason = "..." }` for claims of registered experiments and
    for the toy tasks (their [tasks] switch, e.g. countdown: pass@1)."""
    claims = {c.key for e in registry.EXPERIMENTS for c in e.claims} | {t.key for t in registry.TASKS}
    margins = {}
    for key, entry in table.items():
        if key not in claims:
            raise ConfigError(f"[margins] names '{key}', which no experiment claims; claims are {sorted(claims)}")
        if not isinstance(entry, dict) or set(entry) != {"value", "reason"}:
            raise ConfigError(f"margins.{key} must be {{ value = NUMBER, reason = \"why this size\" }}")
        value, reason = entry["value"], entry["reason"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ConfigError(f"margins.{key}.value = {value!r}: give a number > 0 in the claim's own units")
        if not isinstance(reason, str) or not reason.strip():
            raise ConfigError(f"margins.{key}.reason is empty: say why the margin has this size")
        margins[key] = Margin(float(value), reason.strip())
    return margins


def reproduce(study: Study, out_dir: str | Path, device: str | None = None,
              seeds: Sequence[int] | None = None) -> Path:
    """Train every arm and seed, the toy tasks, then compare: DIR/paper/report.md (+ DIR/timing.json).
    With `seeds`, only that piece of the study: its comparison goes to DIR/pieces/seeds-A-B/, and once
    the pieces cover every seed they are merged into DIR/paper/ (study/pieces.py)."""
    out_dir = output_dir(out_dir, "--out folder")
    whole = study
    study = study.piece(seeds) if seeds is not None else study
    paper_dir = out_dir / "pieces" / piece_name(study.settings.seeds) if seeds is not None else out_dir / "paper"
    device = device or study.run.train.device
    resolve_device(device)  # a device that is not there fails now, not in a training worker after start-up
    settings = study.settings

    def configs_for(data_dir: Path | None, runs_dir: Path, train_overrides: dict | None = None,
                    model_overrides: dict | None = None) -> dict[str, dict[int, RunConfig]]:
        return {arm: {s: study.run_config(arm, s, runs_dir, data_dir, train_overrides, model_overrides)
                      for s in study.seeds_of(arm)} for arm in study.arms}

    timing: dict[str, float] = {}
    started = time.perf_counter()
    ensure_data(study.run.data)  # once, before the workers start
    runs = configs_for(None, out_dir)
    train_all([cfg for by_seed in runs.values() for cfg in by_seed.values()], settings.workers)
    timing["train_s"] = time.perf_counter() - started
    tasks = None
    if study.tasks is not None:
        started = time.perf_counter()
        tasks = run_tasks(study.tasks, configs_for, settings.baseline, settings.workers, out_dir / "tasks", device,
                          study.gates.matched_tolerance / 2)
        timing["tasks_s"] = time.perf_counter() - started
    started = time.perf_counter()
    report = compare_runs({arm: {s: Path(cfg.train.out_dir) for s, cfg in by_seed.items()} for arm, by_seed in runs.items()},
                          settings.baseline, paper_dir, study.suite, study.gates, device, tasks=tasks,
                          workers=settings.workers, margins=study.margins)
    timing["compare_s"] = time.perf_counter() - started
    timing_dir = paper_dir if seeds is not None else out_dir
    (timing_dir / "timing.json").write_text(json.dumps({**timing, "experiment": asdict(settings),
                                                        "cpu_count": os.cpu_count()}, indent=2))
    minutes = ", ".join(f"{k.removesuffix('_s')} {v / 60:.1f} min" for k, v in timing.items())
    report.write_text(report.read_text() + f"\nWall time of this call ({os.cpu_count()} CPU cores): {minutes}.\n")
    if seeds is not None:
        return merge_pieces(whole, out_dir) or report
    return report
