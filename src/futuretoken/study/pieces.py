"""A study run in pieces, seed by seed: `reproduce --seeds 0 1` trains and compares those seeds only,
into OUT/pieces/seeds-0-1/; once the pieces cover every seed they are merged into OUT/paper/.

Why: a CPU study of five arms and five seeds takes longer than one sitting, and a later piece may
run on another machine. Seeds are independent replications, and a finished piece's results.json
holds every per-seed measurement the verdict rows are computed from, so merging needs the pieces'
results.json files (commit them), not their runs. The merged verdicts are computed once, over all
seeds, exactly as one call over every seed would (study/compare.py write_comparison).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from ..eval.claims import GateSettings
from ..eval.render import read_results
from .compare import write_comparison

SHARED = ("schema", "baseline", "settings", "gates", "ngram", "token_r2", "schedule")  # equal in every piece
PER_SEED = ("matched", "state_use_trajectory", "curves")  # arm -> seed -> value


def piece_name(seeds: Sequence[int]) -> str:
    return "seeds-" + "-".join(str(s) for s in sorted(seeds))


def merge_pieces(study, out_dir: Path) -> Path | None:
    """OUT/paper/report.md from the pieces under OUT/pieces once they cover every seed of `study` (a
    study.reproduce.Study); None while seeds are missing."""
    folders = sorted(p.parent for p in (out_dir / "pieces").glob("*/results.json"))
    pieces = {f.name: read_results(f) for f in folders}
    covered = {s for r in pieces.values() for s in r["seeds"]}
    if not set(study.settings.seeds) <= covered:
        return None
    paper = out_dir / "paper"
    paper.mkdir(parents=True, exist_ok=True)
    results = merge_results(pieces)
    for folder in folders:  # each piece exported its first seed's models
        if (folder / "models").is_dir():
            shutil.copytree(folder / "models", paper / "models", dirs_exist_ok=True)
    results["pieces"] = {f.name: _timing(f) for f in folders}
    return write_comparison(results, paper, GateSettings(**results["gates"]), study.margins)


def merge_results(pieces: dict[str, dict]) -> dict:
    """One results dict (without verdict rows) from the results of pieces with disjoint seeds."""
    owner: dict[int, str] = {}
    for name, r in pieces.items():
        for seed in r["seeds"]:
            if seed in owner:
                raise ValueError(f"seed {seed} is in two pieces, {owner[seed]} and {name}: remove one of the two "
                                 "folders under pieces/ (each seed must count once)")
            owner[seed] = name
    first = next(iter(pieces.values()))
    for name, r in pieces.items():
        differ = [k for k in SHARED if r.get(k) != first.get(k)]
        if differ:
            raise ValueError(f"piece {name} differs from the others in {differ}: pieces of one study share the "
                             "corpus, the suite settings and the gates; rerun it with the same experiment file")
    merged = {k: first.get(k) for k in SHARED}
    merged["seeds"] = sorted(owner)
    merged["arms"], merged["floors"], merged["models"] = {}, {}, {}
    for r in pieces.values():
        for key in ("arms", "floors", "models"):  # the same arm's summary, floors and models in every piece
            for k, v in (r.get(key) or {}).items():
                merged[key].setdefault(k, v)
        if "coherence_calibration" in r:
            merged.setdefault("coherence_calibration", r["coherence_calibration"])
    for key in PER_SEED:
        merged[key] = {arm: dict(sorted({s: v for r in pieces.values() for s, v in r[key].get(arm, {}).items()}.items(),
                                        key=lambda kv: int(kv[0])))
                       for arm in merged["arms"] if any(arm in r[key] for r in pieces.values())}
    merged["pairs"] = {}
    for arm in merged["arms"]:
        by_seed = {int(s): pair for r in pieces.values() if arm in r["pairs"]
                   for s, pair in zip(sorted(r["matched"][arm], key=int), r["pairs"][arm])}
        if by_seed:
            merged["pairs"][arm] = [by_seed[s] for s in sorted(by_seed)]
    tasks = [r["tasks"] for r in pieces.values() if r.get("tasks")]
    merged["tasks"] = {name: _merge_task([t[name] for t in tasks]) for name in tasks[0]} if tasks else None
    return merged


def _merge_task(results: list[dict]) -> dict:
    """eval.tasks.score_arms results of disjoint seeds as one: every list under an arm is per seed."""
    merged = {"n_eval": results[0]["n_eval"], "max_steps": results[0]["max_steps"], "seeds": {}}
    for r in results:
        for arm, seeds in r["seeds"].items():
            merged["seeds"].setdefault(arm, []).extend(seeds)
        for section, per_arm in r.items():
            if isinstance(per_arm, dict) and section != "seeds":
                for arm, values in per_arm.items():
                    _extend(merged.setdefault(section, {}).setdefault(arm, {}), values)
    for arm, seeds in merged["seeds"].items():  # seed order, as one call over every seed lists them
        order = sorted(range(len(seeds)), key=seeds.__getitem__)
        merged["seeds"][arm] = [seeds[i] for i in order]
        for section, per_arm in merged.items():
            if section != "seeds" and isinstance(per_arm, dict) and arm in per_arm:
                _reorder(per_arm[arm], order)
    return merged


def _extend(into: dict, values: dict) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            _extend(into.setdefault(k, {}), v)
        else:
            into.setdefault(k, []).extend(v)


def _reorder(values: dict, order: list[int]) -> None:
    for k, v in values.items():
        if isinstance(v, dict):
            _reorder(v, order)
        else:
            values[k] = [v[i] for i in order]


def _timing(folder: Path) -> dict:
    path = folder / "timing.json"
    return json.loads(path.read_text()) if path.is_file() else {}
