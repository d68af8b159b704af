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
a real name; a corrupt one (weights or meta.json) is detected and skipped. Nothing in a
checkpoint is trusted before it is checked: meta.json must pin every file by its sha256, and
the model config it names must match the shapes in the weights' header (safetensors header,
or torch.distributed.checkpoint's metadata read with an unpickler that only builds its own
metadata classes) before any model is built.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from .config import ConfigError, ModelConfig
from .files import atomic_write, fsync_dir, read_json, sha256_file
from .model import MODELS, LanguageModel
from .version import __version__

FORMAT_VERSION = 2
PREFIX = "step-"
META = "meta.json"
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
            shutil.rmtree(old, ignore_errors=True)
    return final


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


def read_meta(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """meta.json of a checkpoint, after checking its format and fields and (verify) that it pins
    every file of the folder and every file matches its sha256."""
    meta = read_json(ckpt / META, CheckpointError, "It is not a readable futuretoken checkpoint")
    if not isinstance(meta, dict):
        raise CheckpointError(f"{ckpt}/{META} is not a JSON object: it is not a futuretoken checkpoint")
    if meta.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"{ckpt} has checkpoint format {meta.get('format')}, this futuretoken reads format {FORMAT_VERSION}; "
            "use the futuretoken version that wrote it"
        )
    _check_fields(ckpt, meta)
    files = meta["files"]
    missing = [name for name in REQUIRED_FILES[meta["layout"]] if name not in files]
    if missing:
        raise CheckpointError(f"{ckpt}/{META} does not pin {missing} (layout {meta['layout']!r}): "
                              "the checkpoint cannot be verified")
    if verify:
        present = {p.relative_to(ckpt).as_posix() for p in ckpt.rglob("*") if p.is_file()} - {META}
        if unpinned := sorted(present - set(files)):
            raise CheckpointError(f"{ckpt} holds files its {META} does not pin: {unpinned[:5]}; "
                                  "the checkpoint cannot be verified")
        for name, digest in files.items():
            path = ckpt / name
            if not path.is_file() or sha256_file(path) != digest:
                raise CheckpointError(f"{path} is missing or corrupt (sha256 mismatch)")
    return meta


def _check_fields(ckpt: Path, meta: dict[str, Any]) -> None:
    """The fields every reader relies on, with their types: a malformed meta.json is a CheckpointError."""
    files = meta.get("files")
    valid = {
        "layout": isinstance(meta.get("layout"), str) and meta["layout"] in REQUIRED_FILES,
        "step": type(meta.get("step")) is int,
        "model_type": isinstance(meta.get("model_type"), str),
        "model_config": isinstance(meta.get("model_config"), dict),
        "files": isinstance(files, dict) and all(isinstance(d, str) and _plain_relative(n) for n, d in files.items()),
    }
    if bad := [name for name, ok in valid.items() if not ok]:
        raise CheckpointError(f"{ckpt}/{META} is malformed: {', '.join(bad)} missing or invalid "
                              "(files must map relative paths inside the folder to sha256 hashes)")


def _plain_relative(name: str) -> bool:
    """A path below the checkpoint folder: not absolute, no '..' (pinned names never lead elsewhere)."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest checkpoint that passes read_checkpoint; corrupt ones are skipped with a warning."""
    for ckpt in reversed(list_checkpoints(run_dir)):
        try:
            read_checkpoint(ckpt)
            return ckpt
        except CheckpointError as err:
            warnings.warn(f"skipping checkpoint: {err}; falling back to the previous one", stacklevel=2)
    return None


def resolve_checkpoint(path: str | Path) -> Path:
    """A run folder (-> its newest valid checkpoint) or a checkpoint folder."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path} {'is not a folder' if path.exists() else 'does not exist'}; "
                              "give a run folder or one of its checkpoints/step-N folders")
    ckpt = latest_valid_checkpoint(path)
    if ckpt is None:
        raise CheckpointError(f"{path} holds no valid checkpoint; train first or point to a checkpoint folder")
    return ckpt


# torch.distributed.checkpoint's metadata is a pickle: these are the only globals it may name.
DCP_GLOBALS = {
    "torch.distributed.checkpoint.metadata": {"Metadata", "TensorStorageMetadata", "TensorProperties",
                                              "ChunkStorageMetadata", "BytesStorageMetadata", "MetadataIndex",
                                              "StorageMeta", "_MEM_FORMAT_ENCODING"},
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "PurePosixPath"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """Builds dcp's metadata classes, torch.Size and dtypes, and nothing else (so no code runs)."""

    def find_class(self, module: str, name: str):
        if name in DCP_GLOBALS.get(module, ()) or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                                   torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")


def weight_shapes(ckpt: Path, layout: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every model tensor, read from the weights' header without loading them."""
    try:
        if layout == "full":
            with safe_open(ckpt / "model.safetensors", framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        with open(ckpt / "dcp" / ".metadata", "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        prefix = "model.model."  # the trainer saves {"model": <LossModule state>}: model.model.<name>
        return {k.removeprefix(prefix): tuple(v.size) for k, v in metadata.state_dict_metadata.items()
                if k.startswith(prefix)}
    except (SafetensorError, pickle.UnpicklingError, AttributeError, TypeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: the weights' header cannot be read ({err}); the checkpoint is corrupt "
                              "or was not written by futuretoken") from None


def checked_config(ckpt: Path, meta: dict[str, Any]) -> ModelConfig:
    """The model config of a checkpoint, after checking it against sane bounds (ModelConfig.validate)
    and against the shapes in the weights' header: no model is built from a config the weights do
    not confirm, so a tampered meta.json cannot make the constructor allocate without end."""
    model_type = meta["model_type"]
    if model_type not in MODELS:
        raise CheckpointError(f"{ckpt} holds model type '{model_type}', expected one of {sorted(MODELS)}")
    try:
        config = ModelConfig(**meta["model_config"])
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{ckpt} has a model config this version cannot read: {err}") from None
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in MODELS[model_type](config).state_dict().items()}
    found = weight_shapes(ckpt, meta["layout"])
    if found != expected:
        diff = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{ckpt}: the weights do not match the model config in {META} ({len(diff)} tensors differ, e.g. "
            f"{diff[0]}: config {expected.get(diff[0])}, weights {found.get(diff[0])}); the checkpoint is corrupt"
        )
    return config


def read_checkpoint(ckpt: Path, verify: bool = True) -> tuple[dict[str, Any], ModelConfig]:
    """meta.json (read_meta) and the model config the weights confirm (checked_config)."""
    meta = read_meta(ckpt, verify)
    return meta, checked_config(ckpt, meta)


def load_full_model_state(ckpt: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(ckpt / "model.safetensors")
    except SafetensorError as err:
        raise CheckpointError(f"{ckpt}/model.safetensors cannot be read ({err})") from None


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

    device = resolve_device(device)  # before any work: a missing device is the first thing to report
    ckpt = resolve_checkpoint(path)
    meta, config = read_checkpoint(ckpt)
    model = MODELS[meta["model_type"]](config)
    if meta["layout"] == "sharded":
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        load_sharded_model_state(ckpt, state)
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    else:
        model.load_state_dict(load_full_model_state(ckpt))
    run_dir = ckpt.parent.parent
    if (run_dir / "tokenizer.json").is_file():
        from .data import load_tokenizer

        model.tokenizer = load_tokenizer(run_dir)
    return model.to(device).eval()


def load_trainer_state(ckpt: Path) -> dict[str, Any]:
    return torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)


def run_data_dir(run_dir: str | Path) -> Path:
    """The prepared data folder a run was trained on (from RUN/run.json)."""
    config = read_json(Path(run_dir) / "run.json", CheckpointError, "Fix: give a run folder made by futuretoken train")
    try:
        return Path(config["data"]["dir"])
    except (KeyError, TypeError):
        raise CheckpointError(f"{run_dir}/run.json names no data folder (data.dir)") from None


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
