"""What a run folder records besides its checkpoints: its data folder (checked against the data
identity run.json records) and its metrics."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..storage import read_json
from .layout import RUN_RECORD, CheckpointError


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """RUN/run.json: the config a run was trained with, its data identity and tokenizer."""
    return read_json(Path(run_dir) / RUN_RECORD, CheckpointError, "Fix: give a run folder made by futuretoken train")


def _recorded_data_dir(run_dir: Path) -> str | None:
    """data.dir from RUN/run.json, for messages (None when it cannot be read)."""
    try:
        return str(json.loads((run_dir / RUN_RECORD).read_text())["data"]["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_data_dir(run_dir: str | Path) -> Path:
    """The prepared data folder a run was trained on (from RUN/run.json), after checking that it still
    holds those data (the identity run.json records): measurements never read other text silently."""
    from ..data import DataError
    from ..data.shards import data_identity, read_manifest

    config = read_run_record(run_dir)
    try:
        data_dir = Path(config["data"]["dir"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{run_dir}/run.json names no data folder (data.dir)") from None
    recorded = config.get("data_sha256")
    if recorded is not None:
        try:
            now = data_identity(read_manifest(data_dir))
        except (DataError, KeyError, TypeError) as err:
            raise CheckpointError(f"{run_dir} was trained on {data_dir}, which cannot be read now ({err})") from None
        if now != recorded:
            data = config["data"]
            raise CheckpointError(
                f"{data_dir} holds other data than {run_dir} was trained on (it was prepared again since). Fix: "
                f"prepare it again as the run was (futuretoken data prepare --corpus {data.get('corpus')} "
                f"--tokenizer {data.get('tokenizer')} --val-fraction {data.get('val_fraction')} --out {data_dir}), "
                f"or point {run_dir}/run.json's data.dir at a folder that holds those data"
            )
    return data_dir


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of RUN/metrics.jsonl, oldest first ([] when there is none). A line that is not a
    record with an integer step (the end of a write cut short by a kill) is skipped with a warning."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    records, skipped = [], 0
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and type(record.get("step")) is int:
            records.append(record)
        else:
            skipped += 1
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} unreadable line(s), e.g. a write cut short by a kill", stacklevel=2)
    return records
