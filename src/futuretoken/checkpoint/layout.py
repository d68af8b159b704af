"""Checkpoint folders on disk: names, the temporary-folder-then-rename protocol, rotation, and
the folders commands may write into."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from ..storage import PathError, atomic_write, fsync_dir, sha256_file, writable_dir
from ..version import __version__

FORMAT_VERSION = 2
PREFIX = "step-"
META = "meta.json"
RUN_RECORD = "run.json"  # RUN/run.json: the run's full config and data identity (training/run_folder.py)
REQUIRED_FILES = {"full": ("model.safetensors", "trainer.pt"), "sharded": ("trainer.pt", "dcp/.metadata")}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the run; the message says what to do."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def temporary_checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint `step` is assembled. The name depends only on the step, so every process
    of a sharded save finds the same folder."""
    return Path(run_dir) / "checkpoints" / f".{checkpoint_name(step)}.tmp"


def temporary_checkpoint_dir(run_dir: str | Path, step: int) -> Path:
    """An empty folder at temporary_checkpoint_path (leftovers of a crashed save are removed)."""
    tmp = temporary_checkpoint_path(run_dir, step)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def finish_checkpoint(tmp: Path, step: int, meta: dict[str, Any], keep_last: int, keep_every: int = 0) -> Path:
    """Hash every file of `tmp`, write meta.json, rename the folder to step-N, then delete all but
    the newest `keep_last` checkpoints (and those whose step is a multiple of `keep_every`)."""
    final = tmp.parent / checkpoint_name(step)
    try:
        files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        full_meta = {"format": FORMAT_VERSION, "futuretoken": __version__, "step": step, "files": files, **meta}
        atomic_write(tmp / META, json.dumps(full_meta, indent=2))
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(tmp.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(tmp.parent.parent)[:-keep_last]:
        if not (keep_every and checkpoint_step(old) % keep_every == 0):
            remove_checkpoint(old)
    return final


def remove_checkpoint(ckpt: Path) -> None:
    """Delete a checkpoint folder without a reader ever seeing it half deleted: it is first renamed
    to a temporary name (one atomic step: a reader finds it whole or not at all, and then lists
    again, see latest_valid_checkpoint), then removed."""
    doomed = ckpt.with_name(f".{ckpt.name}.old.tmp")
    shutil.rmtree(doomed, ignore_errors=True)  # left by a removal that was killed
    try:
        os.replace(ckpt, doomed)
    except OSError:
        return  # already gone (or renamed by someone else): nothing to remove
    shutil.rmtree(doomed, ignore_errors=True)


def output_dir(path: str | Path, what: str, run_folder_ok: bool = True) -> Path:
    """`path` as a folder a command may write into (files.writable_dir), which must not be a run's
    checkpoints/ folder or anything inside it: meta.json pins every file of a checkpoint, so a file
    written there would make it unverifiable and it would be skipped from then on. With
    run_folder_ok=False a run folder itself (it holds run.json) is refused too."""
    resolved = Path(path).expanduser().resolve()
    for folder in (resolved, *resolved.parents):
        is_checkpoint = folder.name.startswith(PREFIX) and (folder / META).is_file()
        is_checkpoints = folder.name == "checkpoints" and (folder.parent / RUN_RECORD).is_file()
        if is_checkpoint or is_checkpoints:
            raise PathError(f"{what} {path} is inside the checkpoint folder {folder}: a file written there would "
                            "make its checkpoints unverifiable. Fix: choose a folder outside RUN/checkpoints/")
    if not run_folder_ok and (resolved / RUN_RECORD).is_file():
        raise PathError(f"{what} {path} is a run folder (it holds run.json): writing there would replace the run's "
                        "own files (its tokenizer.json). Fix: choose another folder")
    return writable_dir(path, what)


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any],
                    meta: dict[str, Any], keep_last: int, keep_every: int = 0) -> Path:
    """A "full" checkpoint (whole model in safetensors) written by one process.

    Both files are serialized in memory and written by atomic_write: safetensors and torch.save
    report a full disk as SafetensorError / RuntimeError ("unexpected pos"), our own write as
    the OSError it is, which the trainer turns into "free disk space, then --resume".
    """
    tmp = temporary_checkpoint_dir(run_dir, step)
    try:
        atomic_write(tmp / "model.safetensors",
                     safetensors_bytes({k: v.detach().contiguous().cpu() for k, v in model_state.items()}))
        buffer = io.BytesIO()
        torch.save(trainer_state, buffer)
        atomic_write(tmp / "trainer.pt", buffer.getbuffer())
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return finish_checkpoint(tmp, step, {"layout": "full", **meta}, keep_last, keep_every)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix(PREFIX))
