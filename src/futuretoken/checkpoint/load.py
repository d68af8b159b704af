"""Loading what verify.py has checked: a model (ft.load) with its run's tokenizer, the weights of
either layout, and the trainer state for --resume. Nothing here runs code from a checkpoint."""

from __future__ import annotations

import hashlib
import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load

from ..data.tokenizer import TOKENIZER_FILE
from ..model import MODELS, LanguageModel
from ..storage import sha256_file
from .layout import META, CheckpointError
from .runs import _recorded_data_dir
from .verify import RELIST, read_checkpoint, resolve_checkpoint


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
    from ..devices import resolve_device

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
    meta, config, dtype = read_checkpoint(ckpt, verify=not hashed)
    model = MODELS[meta["model_type"]](config).to(dtype)
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
    from ..data import load_tokenizer

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
