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


WAIT_POLICY = "OMP_WAIT_POLICY"  # bench sets it to PASSIVE unless told otherwise (see cli.main)


def cpu_conditions() -> dict:
    """Thread count, OpenMP wait policy and machine load: on a shared CPU these change timings several-fold
    (with the default spinning wait policy two threads ran 5x slower than one under load)."""
    return {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "omp_wait_policy": os.environ.get(WAIT_POLICY, "unset (OpenMP's default: threads spin while waiting)"),
            "load_average_1_5_15_min": [round(x, 2) for x in os.getloadavg()]}


def environment(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        commit = None
    return {"device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
            "commit": commit, **cpu_conditions()}
