"""torchrun integration: process group, DDP / FSDP2 wrapping, the collectives and state dicts the
trainer needs. One process (no torchrun) is the same code with every collective a no-op."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..devices import resolve_device


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_info() -> DistInfo:
    """This process's place in a torchrun launch (rank 0 of 1 without torchrun)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)),
                    int(os.environ.get("WORLD_SIZE", 1)))


def device_for(name: str, info: DistInfo) -> torch.device:
    """The device of this process: under torchrun each process takes the GPU of its local rank."""
    device = resolve_device(name)
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank if info.enabled else (device.index or 0))
        torch.cuda.set_device(device)
    return device


def init(info: DistInfo, device: torch.device) -> None:
    """Start the process group (NCCL on CUDA, gloo on CPU); nothing for one process."""
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def sum_across(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Element-wise sum over processes (a collective on the device: no host sync)."""
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """[obj of rank 0, obj of rank 1, ...] on every process."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def is_sharded(module: nn.Module) -> bool:
    return hasattr(module, "set_requires_gradient_sync")  # an FSDP2 module


def grad_sync(module: nn.Module, enabled: bool):
    """Context for one micro-step: gradients are reduced across processes only when `enabled`
    (the last micro-step of an accumulation); earlier ones accumulate locally."""
    if is_sharded(module):
        module.set_requires_gradient_sync(enabled)
        return contextlib.nullcontext()
    if enabled or not hasattr(module, "no_sync"):
        return contextlib.nullcontext()
    return module.no_sync()


def full_state_dicts(module: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state, on CPU, identical on every process."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_state_dict(module, optimizer, options=opts)


def load_full_state_dicts(module: nn.Module, optimizer: torch.optim.Optimizer, model_sd: dict, optim_sd: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(module, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                   options=StateDictOptions(full_state_dict=True))


def _sharded_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(module, optimizer)  # this process's shards (DTensors)
    return {"model": model_sd, "optim": optim_sd}


def save_sharded(module: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every process writes its own shards of model and optimizer (collective). A failed write (a full
    disk) is an OSError, as for full checkpoints."""
    import torch.distributed.checkpoint as dcp

    try:
        dcp.save(_sharded_state(module, optimizer), checkpoint_id=str(path))
    except dcp.CheckpointException as err:  # dcp gathers every process's write errors into this
        raise OSError(f"torch.distributed.checkpoint could not write {path}: {err}") from err


def load_sharded(module: nn.Module, optimizer: torch.optim.Optimizer, path: Path) -> None:
    """Every process reads its own shards (collective); a failure is a CheckpointError (dcp_load)."""
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from ..checkpoint import dcp_load

    state = _sharded_state(module, optimizer)
    dcp_load(state, path)
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
