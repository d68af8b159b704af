"""E6, "countdown as code": write a Python expression that uses given numbers to hit a target.

Task. `n` numbers (the difficulty, 2..5) drawn from 1..max_number and a target that some
expression reaches using every number exactly once with + - * and parentheses. One example
is one line, the spec first and the program after the colon:

    nums 3 7 2 target 23 : 3 * 7 + 2
    nums 4 9 5 target 11 : ( 9 - 4 ) * 5 - ... (any expression that scores True)

Every token is space-separated (also around parentheses), so a byte-level BPE gives a number
the same token in the spec and in the program. Each line is one document of the training
corpus (prepare() puts the end-of-text token after it); at evaluation the prompt is
end-of-text + the spec up to and including " :", and the model decodes greedily until a
newline or end-of-text.

Train/eval split: a problem belongs to the evaluation split iff crc32 of its spec is 0 mod 10,
so no evaluated spec is ever in the training stream (the same spec may still repeat inside
one split, e.g. at difficulty 2, whose problem space is small).

Scoring (`score`) never executes the program: E6 needs only the value of an arithmetic
expression, so the text is parsed with `ast` and its tree evaluated by a small interpreter.
1. vet: a single expression made only of int literals, + - * and parentheses, at most
   MAX_PROGRAM_CHARS long, whose literals are exactly the problem's numbers as a multiset
   (so a tree of 2n - 1 nodes and depth < n for n numbers). Anything else (names, calls,
   attributes, **, comprehensions, statements) is rejected;
2. evaluate the vetted tree with Python ints, giving up as soon as an intermediate value's
   magnitude exceeds MAX_MAGNITUDE. Every operation then works on numbers of at most ~80
   bits, so scoring takes microseconds whatever the model wrote.
"""

from __future__ import annotations

import ast
import json
import operator
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..data import prepare
from ..infer.generate import batches_by_length, generate
from ..infer.sampling import SamplingConfig
from .experiment import Task

if TYPE_CHECKING:
    from .tasks import TaskSettings

OPS: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*"}
PRECEDENCE = {"+": 1, "-": 1, "*": 2}
APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}
MAX_PROGRAM_CHARS = 256
MAX_MAGNITUDE = 10**12  # |value| bound for every intermediate result (targets are <= 200)
EVAL_BUCKETS = 10  # 1 in 10 specs is evaluation-only


@dataclass(frozen=True)
class Problem:
    numbers: tuple[int, ...]
    target: int
    solution: str  # one reference program (any program that scores True is right)

    @property
    def difficulty(self) -> int:
        return len(self.numbers)

    @property
    def prompt(self) -> str:
        return f"nums {' '.join(map(str, self.numbers))} target {self.target} :"

    @property
    def text(self) -> str:
        """The training line: spec, program, newline."""
        return f"{self.prompt} {self.solution}\n"

    @property
    def split(self) -> str:
        return "eval" if zlib.crc32(self.prompt.encode()) % EVAL_BUCKETS == 0 else "train"


def _expression(rng: random.Random, leaves: list[int]) -> tuple[str, int, int]:
    """A random binary tree over `leaves` in this order -> (text, value, precedence)."""
    if len(leaves) == 1:
        return str(leaves[0]), leaves[0], 3
    cut = rng.randint(1, len(leaves) - 1)
    (lt, lv, lp), (rt, rv, rp) = _expression(rng, leaves[:cut]), _expression(rng, leaves[cut:])
    op = rng.choice("+-*")
    prec = PRECEDENCE[op]
    # Fewest parentheses that keep the VALUE (a + (b - c) may print as a + b - c).
    if lp < prec:
        lt = f"( {lt} )"
    if rp < prec or (rp == prec and op == "-"):
        rt = f"( {rt} )"
    return f"{lt} {op} {rt}", APPLY[op](lv, rv), prec


def make_problem(rng: random.Random, n_numbers: int, max_number: int = 12, max_target: int = 200) -> Problem:
    """Draw numbers, then a random expression over them in a random order; retry until 1 <= value <= max_target."""
    if n_numbers < 1:
        raise ValueError(f"n_numbers={n_numbers} must be >= 1")
    while True:
        numbers = [rng.randint(1, max_number) for _ in range(n_numbers)]
        order = numbers[:]
        rng.shuffle(order)
        text, value, _ = _expression(rng, order)
        if 1 <= value <= max_target:
            return Problem(tuple(numbers), value, text)


def iter_problems(seed: int, difficulties: Sequence[int] = (2, 3, 4, 5), split: str | None = "train",
                  **kwargs) -> Iterator[Problem]:
    """Endless seeded stream, difficulties in turn; split "train" | "eval" | None (both)."""
    rng = random.Random(seed)
    i = 0
    while True:
        problem = make_problem(rng, difficulties[i % len(difficulties)], **kwargs)
        if split is None or problem.split == split:
            i += 1
            yield problem


def stream_documents(seed: int, count: int, difficulties: Sequence[int] = (2, 3, 4, 5),
                     **problem_kwargs) -> Iterator[str]:
    """`count` training documents (one problem line each) of the training split; problem_kwargs go
    to make_problem (max_number, max_target)."""
    problems = iter_problems(seed, difficulties, "train", **problem_kwargs)
    for _ in range(count):
        yield next(problems).text


def write_corpus(path: str | Path, documents: Iterator[str]) -> Path:
    """One JSON object {"text": doc} per line: a corpus that prepare() reads as *.jsonl."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(json.dumps({"text": doc}) + "\n")
    return path


def prepare_countdown_corpus(out_dir: str | Path, n_docs: int = 50_000, seed: int = 0,
                             difficulties: Sequence[int] = (2, 3, 4, 5), tokenizer: str = "bpe:512",
                             val_fraction: float = 0.02, **problem_kwargs) -> Path:
    """OUT_DIR/source/countdown.jsonl + prepared token shards in OUT_DIR: use it as `data.dir`."""
    out = Path(out_dir)
    src = write_corpus(out / "source" / "countdown.jsonl",
                       stream_documents(seed, n_docs, difficulties, **problem_kwargs))
    prepare(corpus=str(src), tokenizer=tokenizer, out_dir=out, val_fraction=val_fraction, seed=seed)
    return out


# --- scoring ----------------------------------------------------------------------------------
def _vetted_tree(program_text: str, numbers: Sequence[int]) -> ast.expr | None:
    """The expression tree of `program_text` if it is an allowed expression over exactly `numbers`, else None."""
    text = program_text.strip()
    if not text or len(text) > MAX_PROGRAM_CHARS:
        return None
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    literals = []
    for node in ast.walk(tree.body):
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            continue
        if isinstance(node, tuple(OPS)):
            continue
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            continue
        return None  # a name, call, attribute, other operator, ...
    return tree.body if sorted(literals) == sorted(numbers) else None


def _evaluate(node: ast.expr) -> int | None:
    """Value of a vetted tree, or None as soon as an intermediate result leaves [-MAX_MAGNITUDE, MAX_MAGNITUDE]."""
    if isinstance(node, ast.Constant):
        value = node.value
    else:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if left is None or right is None:
            return None
        value = APPLY[OPS[type(node.op)]](left, right)
    return value if abs(value) <= MAX_MAGNITUDE else None


def vet(program_text: str, numbers: Sequence[int]) -> str | None:
    """The canonical source of `program_text` if it is an allowed expression over exactly `numbers`, else None."""
    tree = _vetted_tree(program_text, numbers)
    return None if tree is None else ast.unparse(tree)


def evaluate_program(program_text: str, numbers: Sequence[int]) -> int | None:
    """The value of an allowed expression over exactly `numbers` (None when it is not one, or its
    value or any intermediate one exceeds MAX_MAGNITUDE). Nothing is executed."""
    tree = _vetted_tree(program_text, numbers)
    return None if tree is None else _evaluate(tree)


def score(problem: Problem, program_text: str) -> bool:
    """True iff the program is an allowed expression over the problem's numbers whose value is the target."""
    return evaluate_program(program_text, problem.numbers) == problem.target


def score_many(problems: Sequence[Problem], programs: Sequence[str]) -> list[bool]:
    """score() of each (problem, program) pair."""
    return [score(p, prog) for p, prog in zip(problems, programs, strict=True)]


# --- greedy completion and unique held-out problems, shared with pathstar ------------------------
def unique(problems: Iterator, key: Callable, n: int) -> list:
    """The first n problems of a stream whose key was not seen before."""
    seen, out = set(), []
    for p in problems:
        if key(p) not in seen:
            seen.add(key(p))
            out.append(p)
            if len(out) == n:
                return out
    raise AssertionError("unreachable: problem streams are endless")


def complete_greedy(model, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 64,
                    tokenizer=None, strategy: str = "ar") -> list[str]:
    """Greedy continuation of each prompt (prefixed with end-of-text), cut at the first newline or end-of-text.

    Prompts are batched by token length (generate() takes no padding). The greedy output is
    the same for every strategy ("speculative" is only faster for FTP).
    """
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("the model has no .tokenizer: load it with ft.load(run_dir) or pass tokenizer=")
    ids = [[tok.eot_token, *tok.encode(p)] for p in prompts]
    device = model.head_weight.device
    out = [""] * len(prompts)
    for chunk in batches_by_length([len(row) for row in ids], batch_size):
        batch = torch.tensor([ids[i] for i in chunk], device=device)  # (b, length)
        result = generate(model, batch, max_new_tokens, strategy=strategy, sampling=SamplingConfig(temperature=0.0))
        for i, row in zip(chunk, result.tokens[:, batch.shape[1]:].tolist()):
            if tok.eot_token in row:
                row = row[:row.index(tok.eot_token)]
            out[i] = tok.decode(row).split("\n", 1)[0].strip()
    return out


# --- E6 as a task of the comparison ----------------------------------------------------------------
def held_out_problems(settings: TaskSettings, difficulty: int) -> list[Problem]:
    """The `n_eval` unique evaluation-split problems of one difficulty that every model is scored on."""
    return unique(iter_problems(settings.seed + 1000 + difficulty, (difficulty,), "eval",
                                max_number=settings.max_number), lambda p: p.prompt, settings.n_eval)


def countdown_outcomes(model, settings: TaskSettings) -> dict[str, list[bool]]:
    """{"N numbers": [solved?] per held-out problem} for greedy completions, easiest first."""
    out = {}
    for d in settings.difficulties:
        problems = held_out_problems(settings, d)
        programs = complete_greedy(model, [p.prompt for p in problems], max_new_tokens=48)
        out[f"{d} numbers"] = score_many(problems, programs)
    return out


def countdown_answers(settings: TaskSettings) -> list[tuple[str, str]]:
    """(prompt, reference program) of the easiest setting's held-out problems: the matched-loss yardstick."""
    return [(p.prompt, p.solution) for p in held_out_problems(settings, settings.difficulties[0])]


TASK = Task("countdown", "E6 countdown", prepare_countdown_corpus,
            lambda s: dict(difficulties=s.difficulties, max_number=s.max_number), countdown_outcomes, primary=True,
            answers=countdown_answers)
