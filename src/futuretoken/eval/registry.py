"""Every experiment and task of the comparison, in the order the report lists their claims.

Adding an experiment: write its module (settings, `prepare`, `measure`, claims, ending with
`EXPERIMENT = Experiment(...)`, see eval/experiment.py) and add it to EXPERIMENTS below; the
suite measures it on every model, the comparison turns its claims into verdict rows and the
report prints them. A task (trained on its own corpus) is added to TASKS the same way.
"""

from __future__ import annotations

from . import classification, coherence, countdown, future_bag, future_lens, pathstar, smoothness
from .experiment import Experiment, Task

EXPERIMENTS: tuple[Experiment, ...] = (
    smoothness.EXPERIMENT,  # E3
    coherence.EXPERIMENT,  # E4
    classification.EXPERIMENT,  # E5
    future_bag.EXPERIMENT,  # E2 (secondary claims last)
    future_lens.EXPERIMENT,  # E2b
)
TASKS: tuple[Task, ...] = (countdown.TASK, pathstar.TASK)  # E6, E7

