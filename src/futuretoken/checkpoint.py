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
checkpoint is trusted before it is checked: meta.json must pin every file by its sha256 (no
symbolic links, nothing outside the folder), and the model config it names must match the
shapes in the weights' header (safetensors header, or torch.distributed.checkpoint's metadata
read with an unpickler that only builds its own metadata classes) before any model is built.
The sharded layout's metadata may only name storage files that meta.json pins, and every tensor
it declares must be backed by as many bytes on disk, so a forged one can neither lead a load
outside the folder nor make it allocate what the files do not hold. The tokenizer a run was
trained with is pinned too (meta.json's tokenizer_sha256): a swapped RUN/tokenizer.json is refused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import stat
import warnings
from dataclasses import dataclass
from math import prod
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from .config import ConfigError, ModelConfig
from .data.tokenizer import TOKENIZER_FILE
from .files import PathError, atomic_write, fsync_dir, read_json, sha256_file, writable_dir
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
        is_checkpoints = folder.name == "checkpoints" and (folder.parent / "run.json").is_file()
        if is_checkpoint or is_checkpoints:
            raise PathError(f"{what} {path} is inside the checkpoint folder {folder}: a file written there would "
                            "make its checkpoints unverifiable. Fix: choose a folder outside RUN/checkpoints/")
    if not run_folder_ok and (resolved / "run.json").is_file():
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


def read_meta(ckpt: Path, verify: bool = True) -> dict[str, Any]:
    """meta.json of a checkpoint, after checking its format and fields and (verify) that the folder
    holds only regular files, that meta.json pins every one of them and every one matches its sha256."""
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
        present = _regular_files(ckpt) - {META}
        if unpinned := sorted(present - set(files)):
            raise CheckpointError(f"{ckpt} holds files its {META} does not pin: {unpinned[:5]}; "
                                  "the checkpoint cannot be verified")
        for name, digest in files.items():
            if name not in present or sha256_file(ckpt / name) != digest:
                raise CheckpointError(f"{ckpt / name} is missing or corrupt (sha256 mismatch)")
    return meta


def _regular_files(ckpt: Path) -> set[str]:
    """Names (relative, '/'-separated) of the files below `ckpt`. Everything there must be a regular
    file or folder: a symbolic link could lead a load outside the folder, past every hash."""
    names = set()
    for root, folders, files in os.walk(ckpt):  # does not descend into linked folders: they are refused below
        for name in folders + files:
            path = Path(root) / name
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                kind = "a symbolic link" if stat.S_ISLNK(mode) else "not a regular file"
                raise CheckpointError(f"{path} is {kind}; a checkpoint holds only its own files, so it cannot be "
                                      "verified. Fix: copy the real file into the checkpoint, or use another checkpoint")
            if stat.S_ISREG(mode):
                names.add(path.relative_to(ckpt).as_posix())
    return names


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


RELIST = 10  # times a reader lists a run's checkpoints again when the one it chose was rotated away


def latest_valid_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest checkpoint that passes read_checkpoint; corrupt ones are skipped with a warning.

    A checkpoint that vanishes while it is being checked was rotated away by a training that has
    just put a newer one in place (finish_checkpoint renames the new one in before it removes old
    ones), so the folder is listed again: a reader never sees "no checkpoint" because of rotation.
    """
    for _ in range(RELIST):
        for ckpt in reversed(list_checkpoints(run_dir)):
            try:
                read_checkpoint(ckpt)
                return ckpt
            except CheckpointError as err:
                if not ckpt.exists():
                    break  # rotated away meanwhile: list again
                warnings.warn(f"skipping checkpoint: {err}; falling back to the previous one", stacklevel=2)
        else:
            return None
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


@dataclass(frozen=True)
class StoredTensor:
    """A model tensor as the weights' header declares it."""

    shape: tuple[int, ...]
    dtype: torch.dtype


SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16,
                      "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8, "BOOL": torch.bool}
DCP_MODEL_PREFIX = "model.model."  # the trainer saves {"model": <LossModule state>}: model.model.<name>


def stored_tensors(ckpt: Path, meta: dict[str, Any]) -> dict[str, StoredTensor]:
    """Name -> shape and dtype of every model tensor, read from the weights' header without loading
    them. The sharded layout's metadata is first checked against the files (check_dcp_storage)."""
    try:
        if meta["layout"] == "full":
            found = {}
            with safe_open(ckpt / "model.safetensors", framework="pt") as f:
                for name in f.keys():
                    tensor = f.get_slice(name)
                    if (dtype := SAFETENSORS_DTYPES.get(tensor.get_dtype())) is None:
                        raise ValueError(f"tensor {name} has dtype {tensor.get_dtype()}")
                    found[name] = StoredTensor(tuple(tensor.get_shape()), dtype)
            return found
        metadata = read_dcp_metadata(ckpt)
        check_dcp_storage(ckpt, metadata, meta["files"])
        return {k.removeprefix(DCP_MODEL_PREFIX): StoredTensor(tuple(v.size), v.properties.dtype)
                for k, v in metadata.state_dict_metadata.items() if k.startswith(DCP_MODEL_PREFIX)}
    except (SafetensorError, pickle.UnpicklingError, AttributeError, TypeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{ckpt}: the weights' header cannot be read ({err}); the checkpoint is corrupt "
                              "or was not written by futuretoken") from None


def read_dcp_metadata(ckpt: Path):
    """dcp/.metadata through the unpickler that builds only dcp's own metadata classes."""
    with open(ckpt / "dcp" / ".metadata", "rb") as f:
        return _MetadataUnpickler(f).load()


def check_dcp_storage(ckpt: Path, metadata, pinned: dict[str, str]) -> None:
    """Check torch.distributed.checkpoint's metadata against the files before dcp reads any of them.

    dcp opens whatever storage file the metadata names (relative to dcp/, '../' and absolute paths
    included) and allocates every tensor at the size the metadata declares. So: every storage file
    must be a plain name inside dcp/ that meta.json pins by sha256, every byte range must lie inside
    its file, and every tensor chunk must be backed by at least as many stored bytes as its declared
    size needs. A forged metadata file can then neither lead a load outside the checkpoint nor make
    it allocate more than the (hashed) files hold.
    """
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"{ckpt}/dcp/.metadata {problem}; the checkpoint is corrupt or forged. "
                               "Fix: use another checkpoint")

    stored: dict[tuple[str, tuple[int, ...]], int] = {}  # (tensor name, chunk offsets) -> stored bytes
    for index, info in metadata.storage_data.items():
        name = info.relative_path
        if not (isinstance(name, str) and _plain_relative(name) and "/" not in name and f"dcp/{name}" in pinned):
            raise refuse(f"names storage file {name!r}, which is not a file of this checkpoint that {META} pins "
                         "(a sharded checkpoint reads only its own files)")
        offset, length, size = info.offset, info.length, (ckpt / "dcp" / name).stat().st_size
        if not (type(offset) is int and type(length) is int and 0 <= offset and 0 <= length <= size - offset):
            raise refuse(f"puts {index.fqn} at bytes {offset!r}+{length!r} of dcp/{name}, which holds {size} bytes")
        if getattr(info, "transform_descriptors", None):
            raise refuse(f"asks for storage transforms {info.transform_descriptors!r}, which futuretoken never writes")
        stored[(index.fqn, tuple(index.offset or ()))] = length
    for fqn, tensor in metadata.state_dict_metadata.items():
        if not isinstance(tensor, TensorStorageMetadata):
            continue  # a plain value (optimizer settings): read weights_only, see dcp_load
        shape, dtype = tuple(tensor.size), tensor.properties.dtype
        if not isinstance(dtype, torch.dtype) or not all(type(d) is int and d >= 0 for d in shape):
            raise refuse(f"declares {fqn} with shape {shape} and dtype {dtype!r}")
        covered = 0
        for chunk in tensor.chunks:
            offsets, sizes = tuple(chunk.offsets), tuple(chunk.sizes)
            if len(offsets) != len(shape) or len(sizes) != len(shape) or not all(
                    type(o) is int and type(n) is int and 0 <= o and 0 <= n <= d - o
                    for o, n, d in zip(offsets, sizes, shape)):
                raise refuse(f"declares a chunk of {fqn} at {offsets} of size {sizes} outside its shape {shape}")
            need = prod(sizes) * dtype.itemsize
            if stored.get((fqn, offsets), -1) < need:
                raise refuse(f"declares a chunk of {fqn} of {need} bytes, but stores "
                             f"{stored.get((fqn, offsets), 0)} bytes for it")
            covered += prod(sizes)
        if covered != prod(shape):
            raise refuse(f"declares {fqn} with shape {shape} ({prod(shape)} values), but its chunks hold {covered}")


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
    found = {name: tensor.shape for name, tensor in stored_tensors(ckpt, meta).items()}
    if found != expected:
        diff = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{ckpt}: the weights do not match the model config in {META} ({len(diff)} tensors differ, e.g. "
            f"{diff[0]}: config {expected.get(diff[0])}, weights {found.get(diff[0])}); the checkpoint is corrupt"
        )
    return config


def stored_dtype(ckpt: Path, meta: dict[str, Any]) -> torch.dtype:
    """The floating dtype the weights were saved in (float64 for a float64 run): a model is loaded in
    it, never cast to a narrower one (a finite float64 weight can be infinite in float32)."""
    dtypes = {t.dtype for t in stored_tensors(ckpt, meta).values() if t.dtype.is_floating_point}
    if len(dtypes) != 1:
        raise CheckpointError(f"{ckpt}: the weights have floating dtypes {sorted(map(str, dtypes))}, futuretoken "
                              "saves one; the checkpoint is corrupt or was not written by futuretoken")
    return dtypes.pop()


def read_checkpoint(ckpt: Path, verify: bool = True) -> tuple[dict[str, Any], ModelConfig]:
    """meta.json (read_meta) and the model config the weights confirm (checked_config). A file that
    vanishes while it is read (a checkpoint rotated away) is a CheckpointError too."""
    try:
        meta = read_meta(ckpt, verify)
        return meta, checked_config(ckpt, meta)
    except OSError as err:
        raise CheckpointError(f"{ckpt} cannot be read ({err})") from None


def check_resumable(ckpt: Path, model_type: str, model_config: ModelConfig, data_sha256: str, data_dir: str,
                    sharded: bool) -> None:
    """A training of `model_type` with `model_config` on data `data_sha256` can continue from `ckpt`
    (a launch that shards with FSDP when `sharded`): otherwise a CheckpointError says what differs."""
    meta, saved_config = read_checkpoint(ckpt, verify=False)  # the caller has just verified it
    if meta["model_type"] != model_type:
        raise CheckpointError(
            f"{ckpt} holds a '{meta['model_type']}' model but the config trains '{model_type}'; "
            "set train.model to match, or use another out_dir"
        )
    # The checked config, in which fields added since the checkpoint was written take their defaults.
    saved, wanted = saved_config.to_dict(), model_config.to_dict()
    diff = {k: (saved[k], v) for k, v in wanted.items() if saved[k] != v}
    if diff:
        raise CheckpointError(
            f"{ckpt} was trained with a different model config {diff} (saved, now); "
            "resume with the original config and data, or use another out_dir"
        )
    if "data_sha256" not in meta:
        warnings.warn(f"{ckpt} does not record its training data (written by an older futuretoken): cannot "
                      f"check that {data_dir} still holds the same tokens", stacklevel=3)
    elif meta["data_sha256"] != data_sha256:
        raise CheckpointError(
            f"{ckpt} was trained on other data than {data_dir} holds now (its shards or tokenizer "
            "differ: the folder was prepared again, from another corpus, split, seed or tokenizer), so the same "
            "token ids would mean other text. Fix: resume with the data folder it was trained on, or start a "
            "new run in another train.out_dir"
        )
    if (meta["layout"] == "sharded") != sharded:
        raise CheckpointError(
            f"{ckpt} has the '{meta['layout']}' layout, which this launch cannot continue: sharded checkpoints "
            "are resumed with train.parallel=fsdp under torchrun, full ones without FSDP"
        )


def load_full_model_state(ckpt: Path, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a "full" checkpoint, read once and loaded from the bytes whose sha256 was
    checked against meta.json, so what is loaded is exactly what was verified."""
    path = ckpt / "model.safetensors"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path} cannot be read ({err.strerror})") from None
    if hashlib.sha256(data).hexdigest() != meta["files"]["model.safetensors"]:
        raise CheckpointError(f"{path} is missing or corrupt (sha256 mismatch)")
    try:
        return safetensors_load(data)
    except SafetensorError as err:
        raise CheckpointError(f"{path} cannot be read ({err})") from None


def dcp_load(state: dict[str, Any], path: Path) -> None:
    """torch.distributed.checkpoint.load of `state` from the folder `path` (in one process, or
    collectively under torchrun). Plain values are unpickled weights_only (dcp itself would run any
    pickle), and any failure inside dcp is a CheckpointError naming the folder."""
    import torch.distributed.checkpoint as dcp

    class WeightsOnlyLoadPlanner(dcp.DefaultLoadPlanner):
        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            torch.load(value, weights_only=True)  # raises before dcp's own unrestricted unpickling sees them
            value.seek(0)
            super().load_bytes(read_item, value)

    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message=".*single process.*")
            dcp.load(state, checkpoint_id=str(path), planner=WeightsOnlyLoadPlanner())
    except (dcp.CheckpointException, AssertionError, RuntimeError, ValueError, KeyError, EOFError, OSError,
            pickle.UnpicklingError) as err:
        problem = " ".join(str(err).split())[:400]
        raise CheckpointError(f"{path} cannot be loaded ({type(err).__name__}: {problem}); the checkpoint is "
                              "damaged or was not written by futuretoken, and code in it is never run. Fix: use "
                              "an earlier checkpoint of the run (RUN/checkpoints/step-N)") from None


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """Load a trained model (eval mode) from a run folder or a checkpoint folder, in the dtype it was
    saved in, with the run's tokenizer attached as `.tokenizer` when the run folder has one."""
    from .devices import resolve_device

    device = resolve_device(device)  # before any work: a missing device is the first thing to report
    for _ in range(RELIST):
        ckpt = resolve_checkpoint(path)
        chosen = ckpt != Path(path)  # chosen in a run folder by latest_valid_checkpoint, which has just verified it
        try:
            return _load_verified(ckpt, hashed=chosen).to(device).eval()
        except CheckpointError:
            if ckpt.exists() or ckpt == Path(path):
                raise
            # rotated away by a running training after it was chosen: choose again
    raise CheckpointError(f"the checkpoints of {path} were rotated away faster than they could be read; "
                          "load one checkpoint folder (RUN/checkpoints/step-N), or wait for the training to finish")


def _load_verified(ckpt: Path, hashed: bool) -> LanguageModel:
    """The model of a checkpoint whose files were (hashed=True) or are now checked against meta.json;
    the full layout's weights are hashed once more as they are read (load_full_model_state)."""
    meta, config = read_checkpoint(ckpt, verify=not hashed)
    model = MODELS[meta["model_type"]](config).to(stored_dtype(ckpt, meta))
    if meta["layout"] == "sharded":
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        dcp_load({"model": state}, ckpt / "dcp")
        model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    else:
        model.load_state_dict(load_full_model_state(ckpt, meta))
    model.tokenizer = run_tokenizer(ckpt, meta)
    return model


def run_tokenizer(ckpt: Path, meta: dict[str, Any]):
    """The tokenizer of the run `ckpt` belongs to (RUN/tokenizer.json; None when there is none). A file
    that is not the tokenizer the model was trained with (the sha256 meta.json pins) is refused: its
    token ids would mean other text to the model."""
    from .data import load_tokenizer

    run_dir = ckpt.parent.parent
    path = run_dir / TOKENIZER_FILE
    if not path.is_file():
        return None
    pinned = meta.get("tokenizer_sha256")
    if pinned is None:
        warnings.warn(f"{ckpt} does not record its tokenizer (written by an older futuretoken): cannot check "
                      f"that {path} is the one it was trained with", stacklevel=3)
    elif sha256_file(path) != pinned:
        data = _recorded_data_dir(run_dir)
        raise CheckpointError(
            f"{path} is not the tokenizer {ckpt.name} was trained with (its sha256 differs from the one "
            f"{ckpt.name}/{META} pins), so its token ids would mean other text to this model. Fix: copy the "
            f"tokenizer the run was trained with back: cp {data or 'DATA_FOLDER'}/{TOKENIZER_FILE} {run_dir}/"
        )
    return load_tokenizer(path)


TRAINER_STATE_FIX = "Fix: resume from an earlier checkpoint of the run (move this one aside), or start a new run"


def load_trainer_state(ckpt: Path, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """trainer.pt: read weights_only (tensors and plain values; a pickle that names anything else is
    refused, never run) and checked field by field (against meta.json's step and layout when given)."""
    path = ckpt / "trainer.pt"
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        # torch's own message advises weights_only=False, i.e. running the pickle: never repeat it
        forbidden = re.search(r"GLOBAL ([\w.]+)", str(err))
        problem = (f"it names {forbidden.group(1)}, which is neither a tensor nor a plain value" if forbidden
                   else f"{type(err).__name__}: it is damaged or holds more than tensors and plain values")
        raise CheckpointError(f"{path} cannot be read as a futuretoken trainer state ({problem}); futuretoken never "
                              f"unpickles code from a checkpoint. {TRAINER_STATE_FIX}") from None
    if problems := _trainer_state_problems(state, meta):
        raise CheckpointError(f"{path} is malformed: {'; '.join(problems)}. {TRAINER_STATE_FIX}")
    return state


def _trainer_state_problems(state: Any, meta: dict[str, Any] | None) -> list[str]:
    if not isinstance(state, dict):
        return [f"it holds a {type(state).__name__}, not a dict"]
    problems = []
    for key in ("step", "tokens_seen"):
        if type(state.get(key)) is not int or state[key] < 0:
            problems.append(f"{key} is {state.get(key)!r}, not an integer >= 0")
    if meta is not None and type(state.get("step")) is int and state["step"] != meta["step"]:
        problems.append(f"step {state['step']} differs from {META}'s {meta['step']}")
    rng_size = torch.get_rng_state().numel()
    rng = state.get("rng")
    if not (isinstance(rng, list) and rng and all(
            isinstance(r, dict) and all(isinstance(r.get(k), torch.Tensor) and r[k].dtype == torch.uint8
                                        for k in ("cpu", *(["cuda"] if "cuda" in r else [])))
            and r["cpu"].shape == (rng_size,) for r in rng)):
        problems.append(f"rng is not a list of per-process states ({{'cpu': uint8 tensor of {rng_size}}})")
    layout = meta["layout"] if meta is not None else "full" if "optimizer" in state else "sharded"
    if layout == "full":  # the sharded layout keeps the optimizer in dcp/
        optimizer = state.get("optimizer")
        if not (isinstance(optimizer, dict) and isinstance(optimizer.get("state"), dict)
                and isinstance(optimizer.get("param_groups"), list)):
            problems.append("optimizer is not an optimizer state dict (with 'state' and 'param_groups')")
    return problems


def _recorded_data_dir(run_dir: Path) -> str | None:
    """data.dir from RUN/run.json, for messages (None when it cannot be read)."""
    try:
        return str(json.loads((run_dir / "run.json").read_text())["data"]["dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_data_dir(run_dir: str | Path) -> Path:
    """The prepared data folder a run was trained on (from RUN/run.json), after checking that it still
    holds those data (the identity run.json records): measurements never read other text silently."""
    from .data import DataError
    from .data.shards import data_identity, read_manifest

    config = read_json(Path(run_dir) / "run.json", CheckpointError, "Fix: give a run folder made by futuretoken train")
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
