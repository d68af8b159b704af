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


def _checkpoint_each(blocks) -> None:
    for block in blocks:
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed


def beside_encoder(model: nn.Module) -> list[nn.Module]:
    """The blocks a model type runs beside its encoder: FTP's decoder, MTP's heads 2..N, MTP-seq's modules."""
    if hasattr(model, "dec_blocks"):
        return list(model.dec_blocks)
    if hasattr(model, "heads"):
        return list(model.heads)
    if hasattr(model, "mtp"):
        return [module.block for module in model.mtp]
    return []


def apply_activation_checkpointing(model: nn.Module, which: str) -> None:
    """which: "none", "decoder" (the blocks beside the encoder: FTP's decoder, MTP's extra heads, MTP-seq's
    modules) or "all" (those and the encoder's blocks)."""
    if which not in CHOICES:
        raise ValueError(f"activation_checkpointing='{which}' is unknown; choose one of {', '.join(CHOICES)}")
    if which in ("decoder", "all"):
        _checkpoint_each(beside_encoder(model))
    if which == "all":
        _checkpoint_each(model.encoder.blocks)
