"""A compared model to hand around: one checkpoint's weights, tokenizer and config as a small run folder.

`export_weights` writes OUT/run.json, OUT/tokenizer.json and OUT/checkpoints/step-N/ holding the
weights of a (verified) full-layout checkpoint without its optimizer state, about a third of the
checkpoint's size. `ft.load(OUT)` reads it with every check a run folder gets; training cannot
resume from it (meta.json says weights_only), since the optimizer state is gone.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..data.tokenizer import TOKENIZER_FILE
from ..storage import atomic_write
from .layout import RUN_RECORD, CheckpointError, output_dir, save_checkpoint
from .load import load_full_model_state
from .verify import read_checkpoint


def export_weights(ckpt: str | Path, out_dir: str | Path) -> Path:
    """OUT: a run folder with `ckpt`'s weights only (replacing an earlier export there). Returns OUT."""
    ckpt = Path(ckpt)
    meta, _, _ = read_checkpoint(ckpt)  # verified: nothing unchecked is passed on
    if meta["layout"] != "full":
        raise CheckpointError(f"{ckpt} is a sharded (FSDP) checkpoint; export the weights of a full-layout one "
                              "(train without FSDP, or convert it first)")
    out = output_dir(out_dir, "export folder")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    run_dir = ckpt.parent.parent
    record = {**json.loads((run_dir / RUN_RECORD).read_text()), "exported_from": str(ckpt)}
    atomic_write(out / RUN_RECORD, json.dumps(record, indent=2))
    shutil.copy2(run_dir / TOKENIZER_FILE, out / TOKENIZER_FILE)
    keep = ("model_type", "model_config", "tokens_seen", "data_sha256", "tokenizer_sha256")
    trainer_state = {"step": meta["step"], "tokens_seen": meta.get("tokens_seen", 0),
                     "rng": [{"cpu": torch.get_rng_state()}]}
    save_checkpoint(out, meta["step"], load_full_model_state(ckpt, meta), trainer_state,
                    {**{k: meta[k] for k in keep if k in meta}, "weights_only": True}, keep_last=1)
    return out
