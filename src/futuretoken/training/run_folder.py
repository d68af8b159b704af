"""A run folder as a training writes it: held by one training at a time, its record (run.json and
the tokenizer it was trained with) and its metrics log. The checkpoints inside it are
checkpoint/'s business."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ..checkpoint import RUN_RECORD, output_dir, read_metrics
from ..config import RunConfig
from ..data.shards import MANIFEST
from ..data.tokenizer import TOKENIZER_FILE
from ..storage import atomic_write, file_lock, remove_temporaries, sha256_file

LOCK = ".train.lock"  # held by the training that writes the run folder
METRICS = "metrics.jsonl"


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._held = contextlib.ExitStack()

    def hold(self) -> None:
        """Take the folder for this training, or raise files.LockHeld naming the process that has it.

        Two trainings would delete each other's checkpoints and mix their metrics. The lock is
        released by release(), or by the kernel when the process dies; then what a killed writer
        left half-written (temporary files and checkpoint folders) goes."""
        output_dir(self.path, "train.out_dir")
        self._held.enter_context(file_lock(self.path / LOCK, wait=False))
        remove_temporaries(self.path)
        remove_temporaries(self.path / "checkpoints")

    def release(self) -> None:
        self._held.close()

    def write_record(self, cfg: RunConfig, data_dir: Path, manifest: dict[str, Any], data_sha256: str) -> None:
        """run.json (the config, its data section as the folder was actually prepared, and the identity
        of the data and tokenizer trained on), a copy of the tokenizer, and an empty metrics log."""
        record = cfg.to_dict()
        record["data"].update(corpus=manifest["corpus"], tokenizer=manifest["tokenizer"],
                              val_fraction=manifest["val_fraction"])
        record.update(model_type=cfg.train.model, data_sha256=data_sha256,
                      manifest_sha256=sha256_file(data_dir / MANIFEST), tokenizer_sha256=manifest["tokenizer_sha256"])
        atomic_write(self.path / RUN_RECORD, json.dumps(record, indent=2))
        atomic_write(self.path / TOKENIZER_FILE, (data_dir / TOKENIZER_FILE).read_bytes())
        (self.path / METRICS).write_text("")

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")

    def forget_after(self, step: int) -> None:
        """Drop the metrics logged after `step` (a resume redoes those steps)."""
        kept = [r for r in read_metrics(self.path) if r["step"] <= step]
        atomic_write(self.path / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
