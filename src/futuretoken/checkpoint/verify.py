"""Nothing in a checkpoint is trusted before it is checked: meta.json's fields and hashes, the
folder's files, torch.distributed.checkpoint's metadata against the bytes on disk, and the model
config against the shapes in the weights' header, all before any model is built."""

from __future__ import annotations

import os
import pickle
import stat
import warnings
from dataclasses import dataclass
from math import prod
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import torch
from safetensors import SafetensorError, safe_open

from ..config import ConfigError, ModelConfig
from ..model import MODELS
from ..storage import read_json, sha256_file
from .layout import FORMAT_VERSION, META, REQUIRED_FILES, CheckpointError, list_checkpoints


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


def checked_config(ckpt: Path, meta: dict[str, Any], stored: dict[str, StoredTensor]) -> ModelConfig:
    """The model config of a checkpoint, after checking it against sane bounds (ModelConfig.validate)
    and against the shapes in the weights' header (`stored`): no model is built from a config the
    weights do not confirm, so a tampered meta.json cannot make the constructor allocate without end."""
    model_type = meta["model_type"]
    if model_type not in MODELS:
        raise CheckpointError(f"{ckpt} holds model type '{model_type}', expected one of {sorted(MODELS)}")
    try:
        config = ModelConfig(**meta["model_config"])
        config.validate_for(model_type)  # the fields of this model type, before any model is built
    except (TypeError, ConfigError) as err:
        raise CheckpointError(f"{ckpt} has a model config this version cannot read: {err}") from None
    with torch.device("meta"):  # shapes only: nothing is allocated
        expected = {k: tuple(v.shape) for k, v in MODELS[model_type](config).state_dict().items()}
    found = {name: tensor.shape for name, tensor in stored.items()}
    if found != expected:
        diff = sorted(k for k in expected.keys() | found.keys() if expected.get(k) != found.get(k))
        raise CheckpointError(
            f"{ckpt}: the weights do not match the model config in {META} ({len(diff)} tensors differ, e.g. "
            f"{diff[0]}: config {expected.get(diff[0])}, weights {found.get(diff[0])}); the checkpoint is corrupt"
        )
    return config


def stored_dtype(ckpt: Path, stored: dict[str, StoredTensor]) -> torch.dtype:
    """The floating dtype the weights were saved in (float64 for a float64 run): a model is loaded in
    it, never cast to a narrower one (a finite float64 weight can be infinite in float32)."""
    dtypes = {t.dtype for t in stored.values() if t.dtype.is_floating_point}
    if len(dtypes) != 1:
        raise CheckpointError(f"{ckpt}: the weights have floating dtypes {sorted(map(str, dtypes))}, futuretoken "
                              "saves one; the checkpoint is corrupt or was not written by futuretoken")
    return dtypes.pop()


class CheckedCheckpoint(NamedTuple):
    meta: dict[str, Any]  # meta.json, checked (read_meta)
    config: ModelConfig  # the model config the weights' shapes confirm (checked_config)
    dtype: torch.dtype  # the one floating dtype of the weights (stored_dtype)


def read_checkpoint(ckpt: Path, verify: bool = True) -> CheckedCheckpoint:
    """meta.json, the model config and the weights' dtype, all checked against the weights' header,
    which is read once. A file that vanishes while it is read (a checkpoint rotated away) is a
    CheckpointError too."""
    try:
        meta = read_meta(ckpt, verify)
        stored = stored_tensors(ckpt, meta)
        return CheckedCheckpoint(meta, checked_config(ckpt, meta, stored), stored_dtype(ckpt, stored))
    except OSError as err:
        raise CheckpointError(f"{ckpt} cannot be read ({err})") from None


def check_resumable(ckpt: Path, model_type: str, model_config: ModelConfig, data_sha256: str, data_dir: str,
                    sharded: bool) -> None:
    """A training of `model_type` with `model_config` on data `data_sha256` can continue from `ckpt`
    (a launch that shards with FSDP when `sharded`): otherwise a CheckpointError says what differs."""
    meta, saved_config, _ = read_checkpoint(ckpt, verify=False)  # the caller has just verified it
    if meta.get("weights_only"):
        raise CheckpointError(f"{ckpt} holds exported weights only (no optimizer state): training cannot resume "
                              "from it. Fix: resume the run it was exported from, or start a new run")
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
