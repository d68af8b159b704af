"""Live curves beside metrics.jsonl: `train.tracker = "tensorboard" | "wandb" | "none"`.

metrics.jsonl stays the record (the reports read it); a tracker receives the same records as
scalars named SPLIT/KEY, lists one scalar per entry (`train/per_distance/2` is distance k = 2):
losses, per-distance losses, learning rate, gradient norm, tokens and throughput.

- TensorBoard: event files in RUN/tensorboard/ (`tensorboard --logdir RUN`). A resumed run purges
  the events after its checkpoint's step, which it trains again.
- Weights & Biases: one W&B run per run folder (its id is kept in RUN/wandb-id, so a resume
  continues it); `WANDB_MODE=offline` works without network (then `wandb sync RUN/wandb/...`),
  `WANDB_PROJECT` names the project (default: futuretoken).
Both are optional extras: `pip install "futuretoken[track]"`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record ({"step", "split", ...}) as tracker scalars {"SPLIT/KEY": value}."""
    split, out = record["split"], {}
    for key, value in record.items():
        if key in ("step", "split") or isinstance(value, bool):
            continue
        if isinstance(value, list):
            out.update({f"{split}/{key}/{k}": float(v) for k, v in enumerate(value, start=1)})
        elif isinstance(value, (int, float)):
            out[f"{split}/{key}"] = float(value)
    return out


class NoTracker:
    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoard:
    def __init__(self, run_dir: Path, start_step: int) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise _missing("tensorboard") from None
        # purge_step: events logged after the checkpoint a resume starts from are trained again
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict[str, Any]) -> None:
        for name, value in scalars(record).items():
            self.writer.add_scalar(name, value, record["step"])

    def close(self) -> None:
        self.writer.close()


class WandB:
    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        try:
            import wandb
        except ImportError:
            raise _missing("wandb") from None
        id_file = run_dir / "wandb-id"
        if not id_file.is_file():
            id_file.write_text(uuid.uuid4().hex[:16])
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "futuretoken"), name=run_dir.name,
                              id=id_file.read_text().strip(), resume="allow", dir=str(run_dir), config=config)

    def log(self, record: dict[str, Any]) -> None:
        self.run.log(scalars(record), step=record["step"])

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str, run_dir: Path, config: dict[str, Any], start_step: int = 0) -> Tracker:
    """The tracker train.tracker names, for the run in `run_dir` resumed at `start_step` (0: a new run)."""
    if kind == "tensorboard":
        return TensorBoard(run_dir, start_step)
    if kind == "wandb":
        return WandB(run_dir, config)
    return NoTracker()


def _missing(package: str) -> ImportError:
    return ImportError(f"train.tracker = {package!r} needs the {package} package: pip install \"futuretoken[track]\" "
                       f"(or {package}), or set train.tracker = \"none\"")
