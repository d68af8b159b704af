"""Activation checkpointing: recompute blocks' activations in backward instead of storing them.

FTP's decoder runs on B*T*N tokens, so its stored activations can outweigh the whole
encoder's; recomputing them costs one extra decoder forward. Applied from outside the
model (as torchtitan does), and without wrapper modules, so parameter names and
checkpoints are unchanged.
"""

from __future__ import annotations

from torch import nn
from torch.utils.checkpoint import checkpoint

CHOICES = ("none", "decoder", "all")


def _checkpoint_each(blocks: nn.ModuleList) -> None:
    for block in blocks:
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed


def apply_activation_checkpointing(model: nn.Module, which: str) -> None:
    """which: "none", "decoder" (FTP's decoder blocks) or "all" (encoder and decoder blocks)."""
    if which not in CHOICES:
        raise ValueError(f"activation_checkpointing='{which}' is unknown; choose one of {', '.join(CHOICES)}")
    if which in ("decoder", "all") and hasattr(model, "dec_blocks"):
        _checkpoint_each(model.dec_blocks)
    if which == "all":
        _checkpoint_each(model.encoder.blocks)
