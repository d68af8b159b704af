"""Checkpoints: safetensors weights + trainer state, written atomically, verified on load.

Layout of a run folder:
    RUN/run.json                     the run's full config
    RUN/tokenizer.json               copied from the data folder, so a run is self-contained
    RUN/metrics.jsonl                one JSON record per log / eval event
    RUN/checkpoints/step-0000100/    model.safetensors, trainer.pt, meta.json (sha256 of both)
A checkpoint folder is assembled under a temporary name and renamed into place, so a
crash mid-write never leaves a half-written checkpoint under a real name.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..config import ConfigError, ModelConfig
from ..files import atomic_write, sha256_file
from ..model import MODELS, LanguageModel

FORMAT_VERSION = 1
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the run; the message says what to do."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    trainer_state: dict[str, Any],
    meta: dict[str, Any],
    keep_last: int,
    keep_every: int = 0,
) -> Path:
    """Write RUN/checkpoints/step-N atomically, then delete all but the newest `keep_last`
    (and those whose step is a multiple of `keep_every`, kept for later comparisons)."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:07d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
        torch.save(trainer_state, tmp / "trainer.pt")
        files = {name: sha256_file(tmp / name) for name in ("model.safetensors", "trainer.pt")}
        full_meta = {"format": FORMAT_VERSION, "futuretoken": __version__, "step": step, "files": files, **meta}
        atomic_write(tmp / "meta.json", json.dumps(full_meta, indent=2))
        if final.exists():  # re-saving the same step (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep_last]:
        if not (keep_every and checkpoint_step(old) % keep_every == 0):
            shutil.rmtree(old, ignore_errors=True)
    return final


def run_data_dir(run_dir: str | Path) -> Path:
    """The prepared data folder a run was trained on (from RUN/run.json)."""
    return Path(json.loads((Path(run_dir) / "run.json").read_text())["data"]["dir"])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (temporary folders are ignored)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def checkpoint_step(ckpt: Path) -> int:
    return int(ckpt.name.removeprefix(PREFIX))


def read_meta(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    meta_path = ckpt / "meta.json"
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt} has no meta.json: it is not a futuretoken checkpoint")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {meta.get('format')}, this futuretoken reads format {FORMAT_VERSION}; "
            "use the futuretoken version that wrote it"
        )
    if verify:
        for name, digest in meta["files"].items():
            path = ckpt / name
            if not path.is_file() or sha256_file(path) != digest:
                raise CheckpointError(f"{path} is missing or corrupt (sha256 mismatch)")
    return meta


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest checkpoint whose files match their checksums; corrupt ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            read_meta(ckpt)
            return ckpt
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}; falling back to the previous one", stacklevel=2)
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its newest valid checkpoint) or a checkpoint folder."""
    path = Path(path)
    if (path / "meta.json").is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder or one of its checkpoints/step-N folders")
    ckpt = latest_valid_checkpoint(path)
    if ckpt is None:
        raise CheckpointError(f"{path} holds no valid checkpoint; train first or point to a checkpoint folder")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """Load a trained model (eval mode) from a run folder or a checkpoint folder."""
    ckpt = resolve_checkpoint(path)
    meta = read_meta(ckpt)
    model_type = meta.get("model_type")
    if model_type not in MODELS:
        raise CheckpointError(f"{ckpt} holds model type '{model_type}', expected one of {sorted(MODELS)}")
    try:
        config = ModelConfig(**meta["model_config"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{ckpt} has a model config this version cannot read: {err}") from None
    model = MODELS[model_type](config)
    model.load_state_dict(load_file(ckpt / "model.safetensors"))
    run_dir = ckpt.parent.parent
    if (run_dir / "tokenizer.json").is_file():
        from ..data import load_tokenizer

        model.tokenizer = load_tokenizer(run_dir)
    return model.to(device).eval()


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
