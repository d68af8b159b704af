"""E7, path-star graphs (Bachmann & Nagarajan 2024, "The pitfalls of next-token prediction").

A star: one centre node and `degree` arms, each a chain of `length` further nodes; node
labels are distinct random integers below `n_labels`. Edges point away from the centre and
are listed in random order. One example is one line:

    graph 12 5 , 33 40 , 12 7 , 5 33 , 7 21 , 21 9 | 12 40 : 12 5 33 40

i.e. "graph" + the edges "u v" joined by " , ", then " | centre goal :", then the answer:
the path from the centre to the goal leaf (length + 1 nodes, centre first). The prompt is
everything up to and including " :"; evaluation is exact match of the greedy continuation
(up to a newline or end-of-text) with the answer.

Why it is hard for next-token training: with teacher forcing, every answer token after the
first arm node is predictable by following one edge from the previous token (a "Clever Hans"
shortcut), so the only hard decision, which arm to enter, gets little signal; models
trained that way tend to pick an arm at random, accuracy ~ 1/degree. Objectives that
predict several future tokens at once (and reverse-order answers) are known to help.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..data import prepare
from .countdown import complete_greedy, unique, write_corpus
from .experiment import Task

if TYPE_CHECKING:
    from .tasks import TaskSettings

Setting = tuple[int, int]  # (degree, length)


def make_graph(rng: random.Random, degree: int, length: int, n_labels: int = 100) -> tuple[str, str]:
    """One path-star problem -> (prompt_text, answer_text); see the module docstring for the format."""
    if degree < 1 or length < 1:
        raise ValueError(f"degree={degree} and length={length} must both be >= 1")
    if degree * length + 1 > n_labels:
        raise ValueError(f"a ({degree}, {length}) star has {degree * length + 1} nodes but n_labels={n_labels}; "
                         "raise n_labels")
    labels = rng.sample(range(n_labels), degree * length + 1)
    centre, arms = labels[0], [labels[1 + a * length: 1 + (a + 1) * length] for a in range(degree)]
    edges = [(u, v) for arm in arms for u, v in zip([centre, *arm[:-1]], arm)]
    rng.shuffle(edges)
    path = [centre, *rng.choice(arms)]
    prompt = "graph " + " , ".join(f"{u} {v}" for u, v in edges) + f" | {centre} {path[-1]} :"
    return prompt, " ".join(map(str, path))


def parse_prompt(prompt: str) -> tuple[list[tuple[int, int]], int, int]:
    """(edges, start, goal) of a prompt made by make_graph."""
    body, _, query = prompt.removeprefix("graph ").removesuffix(" :").partition(" | ")
    edges = [(int(u), int(v)) for u, v in (e.split() for e in body.split(" , "))]
    start, goal = map(int, query.split())
    return edges, start, goal


def iter_graphs(seed: int, settings: Sequence[Setting] = ((2, 4),), n_labels: int = 100) -> Iterator[tuple[str, str]]:
    """Endless seeded stream of (prompt, answer), settings in turn."""
    rng = random.Random(seed)
    i = 0
    while True:
        degree, length = settings[i % len(settings)]
        i += 1
        yield make_graph(rng, degree, length, n_labels)


def stream_documents(seed: int, count: int, settings: Sequence[Setting] = ((2, 4),),
                     n_labels: int = 100) -> Iterator[str]:
    """`count` training documents, one problem line each."""
    graphs = iter_graphs(seed, settings, n_labels)
    for _ in range(count):
        prompt, answer = next(graphs)
        yield f"{prompt} {answer}\n"


def prepare_pathstar_corpus(out_dir: str | Path, n_docs: int = 50_000, seed: int = 0,
                            settings: Sequence[Setting] = ((2, 4),), n_labels: int = 100,
                            tokenizer: str = "bpe:512", val_fraction: float = 0.02) -> Path:
    """OUT_DIR/source/pathstar.jsonl + prepared token shards in OUT_DIR: use it as `data.dir`.

    Evaluate with a different seed than the corpus: with random labels, repeats of an
    evaluation graph in training are vanishingly rare.
    """
    out = Path(out_dir)
    src = write_corpus(out / "source" / "pathstar.jsonl", stream_documents(seed, n_docs, settings, n_labels))
    prepare(corpus=str(src), tokenizer=tokenizer, out_dir=out, val_fraction=val_fraction, seed=seed)
    return out


# --- E7 as a task of the comparison ----------------------------------------------------------------
def held_out_graphs(settings: TaskSettings) -> list[tuple[str, str]]:
    """The `n_eval` unique (prompt, answer) graphs every model is scored on (a seed the corpus never uses)."""
    return unique(iter_graphs(settings.seed + 2000, ((settings.star_degree, settings.star_length),),
                              settings.star_labels), lambda g: g[0], settings.n_eval)


def pathstar_outcomes(model, settings: TaskSettings) -> dict[str, list[bool]]:
    """{"degree D, length L": [path exact?] per held-out graph}."""
    degree, length = settings.star_degree, settings.star_length
    graphs = held_out_graphs(settings)
    outputs = complete_greedy(model, [p for p, _ in graphs], max_new_tokens=3 * (length + 1) + 4)
    return {f"degree {degree}, length {length}": [o == a for o, (_, a) in zip(outputs, graphs)]}


TASK = Task("pathstar", "E7 path-star", prepare_pathstar_corpus,
            lambda s: dict(settings=((s.star_degree, s.star_length),), n_labels=s.star_labels), pathstar_outcomes,
            primary=False, answers=held_out_graphs)
