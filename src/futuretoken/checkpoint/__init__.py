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

from .layout import (
    FORMAT_VERSION,
    META,
    PREFIX,
    REQUIRED_FILES,
    RUN_RECORD,
    CheckpointError,
    checkpoint_name,
    checkpoint_step,
    finish_checkpoint,
    list_checkpoints,
    output_dir,
    remove_checkpoint,
    save_checkpoint,
    temporary_checkpoint_dir,
    temporary_checkpoint_path,
)
from .load import TRAINER_STATE_FIX, dcp_load, load_full_model_state, load_model, load_trainer_state, run_tokenizer
from .portable import export_weights
from .runs import read_metrics, read_run_record, run_data_dir
from .verify import (
    CheckedCheckpoint,
    StoredTensor,
    check_dcp_storage,
    check_resumable,
    checked_config,
    latest_valid_checkpoint,
    read_checkpoint,
    read_dcp_metadata,
    read_meta,
    resolve_checkpoint,
    stored_dtype,
    stored_tensors,
)

__all__ = [
    "FORMAT_VERSION", "META", "RUN_RECORD", "PREFIX", "REQUIRED_FILES", "TRAINER_STATE_FIX", "CheckedCheckpoint", "CheckpointError",
    "StoredTensor", "check_dcp_storage", "check_resumable", "checked_config", "checkpoint_name", "checkpoint_step", "dcp_load", "export_weights",
    "finish_checkpoint", "latest_valid_checkpoint", "list_checkpoints", "load_full_model_state", "load_model",
    "load_trainer_state", "output_dir", "read_checkpoint", "read_dcp_metadata", "read_meta", "read_metrics", "read_run_record",
    "remove_checkpoint", "resolve_checkpoint", "run_data_dir", "run_tokenizer", "save_checkpoint", "stored_dtype",
    "stored_tensors", "temporary_checkpoint_dir", "temporary_checkpoint_path",
]
