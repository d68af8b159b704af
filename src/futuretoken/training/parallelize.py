"""How a model is made ready to train, in one place and torchtitan's order: activation
checkpointing, then torch.compile block by block, then DDP or FSDP2 around the loss module.

Each step is applied from outside the model and without wrapper modules, so parameter names
and checkpoints are the same whatever is switched on. The model says which of its blocks run
beside the encoder (`side_blocks`) and which FSDP shards one by one (`sharded_blocks`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ACTIVATION_CHECKPOINTING
from ..model import LanguageModel
from .distributed import DistInfo


def apply_activation_checkpointing(model: LanguageModel, which: str) -> None:
    """Recompute blocks' activations in backward instead of storing them. which: "none", "decoder"
    (the blocks beside the encoder: FTP's decoder, whose B*T*N tokens can outweigh the whole
    encoder's activations, MTP's extra heads, MTP-seq's modules) or "all" (those and the encoder's)."""
    if which not in ACTIVATION_CHECKPOINTING:
        raise ValueError(f"activation_checkpointing='{which}' is unknown; choose one of "
                         f"{', '.join(ACTIVATION_CHECKPOINTING)}")
    blocks = {"none": [], "decoder": model.side_blocks(), "all": [*model.side_blocks(), *model.encoder.blocks]}
    for block in blocks[which]:
        forward = block.forward

        def checkpointed(*args, _forward=forward, **kwargs):
            return checkpoint(_forward, *args, use_reentrant=False, **kwargs)

        block.forward = checkpointed


def compile_blocks(model: LanguageModel) -> None:
    """torch.compile each transformer block on its own (as torchtitan does): every block of a kind
    has the same code and shapes, so one compilation serves them all, and the chunked loss, the
    sequential MTP backward and FSDP's hooks stay outside the compiled graphs."""
    for block in [*model.encoder.blocks, *model.side_blocks()]:
        block.compile()


def parallelize(module: nn.Module, model: LanguageModel, info: DistInfo, device: torch.device, parallel: str,
                amp: torch.dtype | None, activation_checkpointing: str = "none", compile: bool = False) -> nn.Module:
    """`module` (the loss module holding `model`) with activation checkpointing, per-block compile
    and, under torchrun, DDP (replicated) or FSDP2 (`fully_shard`, sharded) applied in that order.

    FSDP runs as torchtitan does: its MixedPrecisionPolicy computes in `amp` (bf16) and reduces
    gradients in fp32, so no autocast is needed around a sharded module.
    """
    apply_activation_checkpointing(model, activation_checkpointing)
    if compile:
        compile_blocks(model)
    if not info.enabled:
        return module
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:  # torch < 2.6
        from torch.distributed._composable.fsdp import MixedPrecisionPolicy, fully_shard
    policy = MixedPrecisionPolicy(param_dtype=amp, reduce_dtype=torch.float32) if amp else MixedPrecisionPolicy()
    for block in model.sharded_blocks():
        fully_shard(block, mp_policy=policy)
    fully_shard(module, mp_policy=policy)
    return module
