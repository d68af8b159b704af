"""Checkpoints and run folders: written atomically, verified on load, read by every layer above.

Layout of a run folder:
    RUN/run.json                     the run's full config
    RUN/tokenizer.json               copied from the data folder, so a run is self-contained
    RUN/metrics.jsonl                one JSON record per log / eval event
    RUN/checkpoints/step-0000100/
        meta.json                    format, step, model type and config, layout, sha256 of every other file
        trainer.pt                   step, tokens seen, the RNG state of every process (+ optimizer, full layout)
        model.safetensors            "full" layout (one process, DDP): the whole model
        dcp/                         "sharded" layout (FSDP): model and optimizer shards written by every
                                     process through torch.distributed.checkpoint
A checkpoint folder is assembled under a temporary name and renamed into place once every
file is written and hashed, so a crash mid-write never leaves a half-written checkpoint under
a real name; a corrupt one is detected by its hashes and skipped.
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

from .config import ConfigError, ModelConfig
from .files import atomic_write, sha256_file
from .model import MODELS, LanguageModel
from .version import __version__

FORMAT_VERSION = 2
PREFIX = "step-"
META = "meta.json"
REQUIRED_FILES = {"full": ("model.safetensors", "trainer.pt"), "sharded": ("trainer.pt", "dcp/.metadata")}


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt or does not fit the run; the message says what to do."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:07d}"


def temporary_checkpoint_path(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint `step` is assembled. The name depends only on the step, so every process
    of a sharded save finds the same folder."""
    return Path(run_dir) / "checkpoints" / f".tmp-{checkpoint_name(step)}"


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
        _fsync_dir(tmp.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(tmp.parent.parent)[:-keep_last]:
        if not (keep_every and checkpoint_step(old) % keep_every == 0):
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(run_dir: Path, step: int, model_state: dict[str, torch.Tensor], trainer_state: dict[str, Any],
                    meta: dict[str, Any], keep_last: int, keep_every: int = 0) -> Path:
    """A "full" checkpoint (whole model in safetensors) written by one process."""
    tmp = temporary_checkpoint_dir(run_dir, step)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, tmp / "model.safetensors")
        torch.save(trainer_state, tmp / "trainer.pt")
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


def read_meta(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """meta.json of a checkpoint, after checking the format and (verify) every file's sha256."""
    meta_path = ckpt / META
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt} has no {META}: it is not a futuretoken checkpoint")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {meta.get('format')}, this futuretoken reads format {FORMAT_VERSION}; "
            "use the futuretoken version that wrote it"
        )
    missing = [name for name in REQUIRED_FILES.get(meta.get("layout"), ("?",)) if name not in meta.get("files", {})]
    if missing:
        raise CheckpointError(f"{ckpt}/{META} does not pin {missing} (layout {meta.get('layout')!r}): "
                              "the checkpoint cannot be verified")
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
    if (path / META).is_file():
        return path
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run folder or one of its checkpoints/step-N folders")
    ckpt = latest_valid_checkpoint(path)
    if ckpt is None:
        raise CheckpointError(f"{path} holds no valid checkpoint; train first or point to a checkpoint folder")
    return ckpt


def load_sharded_model_state(ckpt: Path, state: dict[str, torch.Tensor]) -> None:
    """Fill `state` (keys as the trainer saved them, "model."-prefixed) from a sharded checkpoint,
    in one process: torch.distributed.checkpoint reassembles the shards."""
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
        warnings.filterwarnings("ignore", message=".*single process.*")
        dcp.load({"model": state}, checkpoint_id=str(ckpt / "dcp"))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """Load a trained model (eval mode) from a run folder or a checkpoint folder, with the run's
    tokenizer attached as `.tokenizer` when the run folder has one."""
    from .devices import resolve_device

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
    if meta["layout"] == "sharded":
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        load_sharded_model_state(ckpt, state)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    else:
        model.load_state_dict(load_file(ckpt / "model.safetensors"))
    run_dir = ckpt.parent.parent
    if (run_dir / "tokenizer.json").is_file():
        from .data import load_tokenizer

        model.tokenizer = load_tokenizer(run_dir)
    return model.to(resolve_device(device)).eval()


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)


def run_data_dir(run_dir: str | Path) -> Path:
    """The prepared data folder a run was trained on (from RUN/run.json)."""
    return Path(json.loads((Path(run_dir) / "run.json").read_text())["data"]["dir"])
