"""The measurement jobs of a comparison, each cached under OUT/cache as JSON.

A job is independent of the others (selection losses of a run, measurements of a checkpoint,
random-init floors, gate 2 along a run): an interrupted comparison continues where it
stopped, and with `workers` > 1 the jobs run in that many processes at once.
"""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from ..checkpoint import checkpoint_step, list_checkpoints, load_model
from ..eval.state_use import state_ablation
from ..eval.suite import EvalData, SuiteSettings, measure, measure_floor, selection_loss
from ..storage import atomic_write


class Cache:
    """JSON results under OUT/cache/NAME.json: computed once, read back on a later call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def has(self, name: str) -> bool:
        return (self.root / f"{name}.json").is_file()

    def get(self, name: str):
        return json.loads((self.root / f"{name}.json").read_text())

    def put(self, name: str, value):
        atomic_write(self.root / f"{name}.json", json.dumps(value))
        return value


@dataclass(frozen=True)
class Job:
    kind: str  # "selection" (a run) | "state" (a run) | "measure" (a checkpoint) | "floor" (a checkpoint's shape)
    name: str  # its cache entry
    target: str  # the run or checkpoint folder
    init_seed: int = 0  # "floor": the random initialisation


def run_job(job: Job, data: EvalData, settings: SuiteSettings, device) -> dict:
    if job.kind == "selection":
        return {str(checkpoint_step(c)): selection_loss(load_model(c, device), data)
                for c in list_checkpoints(job.target)}
    if job.kind == "state":  # gate 2 along training: the loss rise when h_t is replaced, per kept checkpoint
        windows = data.report[: 16 * settings.trajectory_batches]
        return {str(checkpoint_step(c)): state_ablation(load_model(c, device), windows, seed=settings.seed)["increase"]
                for c in list_checkpoints(job.target)}
    if job.kind == "measure":
        return measure(load_model(job.target, device), data, settings)
    return measure_floor(load_model(job.target, device), data, settings, job.init_seed)


_WORKER: dict = {}


def _worker_init(data_args: tuple, settings: SuiteSettings, device: str) -> None:
    import torch

    torch.set_num_threads(1)  # one thread per process: small models use more poorly, the processes share the cores
    _WORKER.update(data=EvalData.build(*data_args, settings), settings=settings, device=device)


def _worker_run(job: Job) -> dict:
    return run_job(job, _WORKER["data"], _WORKER["settings"], _WORKER["device"])


@dataclass
class JobRunner:
    """Computes every job whose result is not cached yet, in `workers` processes when > 1."""

    cache: Cache
    data: EvalData
    data_args: tuple  # what EvalData.build takes besides the settings: each worker builds its own
    settings: SuiteSettings
    device: object
    workers: int = 1

    def __call__(self, jobs: list[Job]) -> None:
        todo = [j for j in dict.fromkeys(jobs) if not self.cache.has(j.name)]
        if self.workers <= 1 or len(todo) <= 1:
            for job in todo:
                self.cache.put(job.name, run_job(job, self.data, self.settings, self.device))
            return
        from tqdm.auto import tqdm

        with ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_worker_init,
                                 initargs=(self.data_args, self.settings, str(self.device))) as pool:
            futures = {pool.submit(_worker_run, job): job for job in todo}
            for future in tqdm(futures, desc="measurements", unit="job"):
                self.cache.put(futures[future].name, future.result())
