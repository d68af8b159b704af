"""Which device and which autocast dtype: one answer for every command."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device = "auto") -> torch.device:
    """"auto" -> CUDA when available, else CPU; any other name is checked, so a request for a
    device that is not there fails here with the fix instead of deep inside a kernel."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device={name!r} is not a device name; give auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but CUDA is not available here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `train.dtype` setting: bf16 on CUDA for "auto", none on CPU."""
    if dtype == "bfloat16" or (dtype == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def param_dtype(dtype: str) -> torch.dtype:
    """The dtype parameters live in: float64 only when asked for (exactness checks), else float32."""
    return torch.float64 if dtype == "float64" else torch.float32


def make_deterministic() -> None:
    """Deterministic kernels everywhere (cuBLAS workspace, no cuDNN autotuning): the same inputs
    then give the same bits on CUDA too, which bit-exact resume needs. CPU kernels already are."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
