"""Train several runs, one after another or several at once in worker processes."""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

from ..checkpoint import read_metrics
from ..config import RunConfig
from ..model import training_flops_per_token
from .trainer import train


class TrainingInterrupted(KeyboardInterrupt):
    """A signal stopped the runs (each saved a checkpoint): the same call again continues them."""


def _train_one(values: dict, threads: int) -> bool:
    """One training run in a worker process (a picklable entry point); False when a signal stopped it."""
    import torch

    torch.set_num_threads(threads)
    return not train(RunConfig.from_dict(values), resume=True).interrupted


STOPPED = "stopped by a signal; every run saved a checkpoint: run the same command again to continue"


def train_all(configs: list[RunConfig], workers: int = 1) -> None:
    """Train (or resume) every config. `workers` > 1 runs that many at once in separate processes
    (on CPU each gets cpu_count // workers threads: small models use threads poorly, so parallel
    runs finish sooner), the most expensive first so the last to finish are short ones."""
    if workers <= 1 or len(configs) <= 1:
        for cfg in configs:
            if train(cfg, resume=True).interrupted:
                raise TrainingInterrupted(STOPPED)  # not on to the next run: the user asked to stop
        return
    from tqdm.auto import tqdm

    cost = lambda c: training_flops_per_token(c.model, c.train.model) * c.train.max_steps  # noqa: E731
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = []
    for cfg in sorted(configs, key=cost, reverse=True):
        values = cfg.to_dict()
        values["train"]["progress"] = False  # several bars at once would garble the terminal
        jobs.append(values)
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_train_one, values, threads) for values in jobs]
        total = sum(cfg.train.max_steps for cfg in configs)
        with tqdm(total=total, desc=f"training {len(configs)} runs", unit="step", dynamic_ncols=True) as bar:
            pending = set(futures)
            while pending:  # the bar follows the steps every run has logged (train.log_interval)
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                for future in done:
                    if not future.result():  # a failed run stops the whole experiment with its own error
                        for other in pending:  # so does a signal: the queued runs do not start
                            other.cancel()
                        raise TrainingInterrupted(STOPPED)
                bar.update(sum(_steps_logged(cfg) for cfg in configs) - bar.n)
                bar.set_postfix(runs_done=len(futures) - len(pending))


POLL_S = 2.0


def _steps_logged(cfg: RunConfig) -> int:
    """The last step a run has logged (its max_steps once finished; 0 before its first log)."""
    records = read_metrics(cfg.train.out_dir) if Path(cfg.train.out_dir, "metrics.jsonl").is_file() else []
    return max((r["step"] for r in records), default=0)
