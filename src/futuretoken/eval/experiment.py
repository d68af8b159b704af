"""What an experiment is: one measurement taken on every compared model, and the claims it decides.

An experiment module (smoothness.py, coherence.py, ...) ends with one `Experiment` value and is
listed once in eval/registry.py; the suite measures every listed experiment on every model, and
the comparison turns each of its claims into a verdict row. A task (E6/E7: trained on its own
generated corpus, scored problem by problem) is a `Task` value listed beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .suite import EvalData

Result = Mapping[str, Any]  # one experiment's JSON result on one model (each module types its own)


@dataclass(frozen=True)
class Claim:
    """One number compared between an arm and the baseline, with how it is tested."""

    key: str
    label: str  # what is compared, as the report prints it
    metric: Callable[[Result], float]  # the experiment's result on one model -> the claim's number
    margin: float  # the minimal effect and equivalence margin (TOST), in the metric's units
    primary: bool  # in the Holm family
    higher_is_better: bool = True
    condition: Callable[[Result, Result], str | None] | None = None  # (arm, baseline) -> why invalid, or None
    items: Callable[[Result], Sequence] | None = None  # per-item outcomes for the secondary exact test
    binary_items: bool = False  # items are pass/fail (McNemar) rather than scores (sign test)


def _always(settings: Any) -> bool:
    return True


@dataclass(frozen=True)
class Experiment:
    """A measurement on one model: its settings, the items shared by every model, the claims it decides.

    - `prepare(data, settings)` builds once per comparison what every model is measured on (windows,
      prompts, ...) from the validation halves in `data`; None when the experiment needs nothing.
    - `measure(model, items, settings, seed)` -> a JSON-serialisable result, per-item lists in item order.
    - `floor(model, items, settings, seed)`: the same on a random initialisation of the model's shape
      (the instrument's floor); None when no floor is measured.
    """

    key: str  # a model's measurements hold the result under this key ("E3")
    name: str  # its settings table, [suite.NAME] in an experiment file
    settings: type  # its settings dataclass
    measure: Callable[[Any, Any, Any, int], dict]
    prepare: Callable[["EvalData", Any], Any] | None = None
    floor: Callable[[Any, Any, Any, int], dict] | None = None
    claims: tuple[Claim, ...] = ()
    enabled: Callable[[Any], bool] = _always  # settings -> whether to run it (e.g. no prompts: no E4)


@dataclass(frozen=True)
class Task:
    """A toy task: every arm and seed is trained on its generated corpus, then scored problem by problem.

    `prepare_corpus(out_dir, n_docs=, seed=, tokenizer=, **corpus_args(settings))` writes the corpus;
    `outcomes(model, settings)` -> {setting: [solved?] per held-out problem}, settings easiest first.
    """

    key: str  # its switch in [tasks] ("countdown")
    name: str  # as the report names it ("E6 countdown")
    prepare_corpus: Callable[..., Any]
    corpus_args: Callable[[Any], dict]
    outcomes: Callable[[Any, Any], dict[str, list[bool]]]
    primary: bool  # the easiest setting's pass@1 is in the Holm family
    answers: Callable[[Any], list[tuple[str, str]]] | None = None  # settings -> held-out (prompt, answer): the
    # next-token loss on the answers' tokens pairs checkpoints at matched loss (eval/tasks.py answer_loss)
