"""What a benchmark result must say about where it was measured."""

from __future__ import annotations

import os
import platform
import subprocess

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def environment(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        commit = None
    return {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit}
