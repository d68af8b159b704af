"""E6 (countdown as code, scored without executing anything) and E7 (path-star graphs)."""

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
import torch

import futuretoken as ft
from futuretoken.config import RunConfig
from futuretoken.data import load_tokenizer
from futuretoken.eval import countdown, pathstar
from futuretoken.eval.countdown import Problem, countdown_outcomes, make_problem, score, vet
from futuretoken.eval.pathstar import make_graph, parse_prompt, pathstar_outcomes
from futuretoken.eval.tasks import TaskSettings


# --- countdown --------------------------------------------------------------------------------
def test_countdown_generator_is_deterministic_and_its_solutions_score():
    a = [make_problem(random.Random(7), n) for n in (2, 3, 4, 5)]
    assert a == [make_problem(random.Random(7), n) for n in (2, 3, 4, 5)]
    assert list(countdown.stream_documents(3, 5)) == list(countdown.stream_documents(3, 5))
    problems = [p for _, p in zip(range(12), countdown.iter_problems(0, (2, 3, 4, 5), split=None))]
    assert {p.difficulty for p in problems} == {2, 3, 4, 5}
    for p in problems:
        assert 1 <= p.target <= 200 and p.text.startswith(p.prompt + " ") and p.text.endswith("\n")
        assert score(p, p.solution), p
    assert countdown.score_many(problems, [p.solution for p in problems]) == [True] * len(problems)
    assert countdown.score_many(problems[:2], [problems[1].solution, "1 +"]) == [False, False]
    assert all(p.split == "eval" for _, p in zip(range(5), countdown.iter_problems(1, (3,), split="eval")))


def test_countdown_scorer_rejects_bad_programs():
    p = Problem(numbers=(3, 7, 2), target=23, solution="3 * 7 + 2")
    assert score(p, " 7 * 3 + 2 ") and score(p, "( 3 * 7 ) + 2") and score(p, "2+7*3")
    assert not score(p, "3 * 7 - 2")  # wrong value
    assert not score(p, "3 * 7 + 2 + 2")  # a number twice
    assert not score(p, "3 * 7")  # a number unused
    assert countdown.score_many([p] * 4, ["3*7", "2+3*7", "__import__('os')", "2-3*7"]) == [False, True, False, False]
    for bad in ("__import__('os').system('x')", "while True: pass", "[0 for _ in iter(int, 1)]", "3 ** 7 ** 2",
                "3 * 7 + True", "3 * 7 + 2;", "", "x = 3 * 7 + 2", "(lambda: 23)()", "3 * 7 // 2", "3*7+-2"):
        assert vet(bad, p.numbers) is None and not score(p, bad), bad


# What the red team ran to escape the old process sandbox: to the scorer each is just text that
# is not an arithmetic expression over the numbers, and nothing of it ever runs.
ESCAPES = [
    "open('x', 'w', opener=lambda p, f: __import__('os').open(p, f, dir_fd=3))",
    "__import__('sys')._getframe().f_back.f_locals.clear()",
    "__import__('_posixsubprocess').fork_exec",
    "__import__('os').setsid() or __import__('time').sleep(99)",
    "__import__('os').mkfifo('/tmp/ft-fifo')",
    "__import__('os').mknod('/tmp/ft-node')",
    "__import__('os').dup2(1, 2)",
    "__import__('os').kill(1, 9)",
    "__import__('os').makedirs('d/' * 4000)",
]


@pytest.mark.parametrize("program", ESCAPES)
def test_countdown_scoring_executes_nothing(program, monkeypatch, tmp_path):
    def no_process(*args, **kwargs):
        raise AssertionError("scoring started a process")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(subprocess.Popen, "__init__", no_process)
    monkeypatch.setattr(os, "fork", no_process)
    p = Problem(numbers=(3, 7, 2), target=23, solution="3 * 7 + 2")
    assert countdown.score_many([p, p], [program, "3 * 7 + 2"]) == [False, True]
    assert not score(p, program) and list(tmp_path.iterdir()) == []


def test_countdown_values_are_bounded_in_magnitude_and_time():
    big = (10**6,) * 12
    huge = " * ".join(map(str, big))  # 10**72 if it were computed
    assert countdown.evaluate_program(huge, big) is None
    assert countdown.evaluate_program("10 ** 100", (10, 100)) is None  # ** is not an allowed operator
    edge = (10**6, 10**6)
    assert countdown.evaluate_program("1000000 * 1000000", edge) == 10**12 == countdown.MAX_MAGNITUDE
    assert countdown.evaluate_program("1000000 * 1000000 + 1", (*edge, 1)) is None
    nested = "(" * 90 + "1" + " + 1 )" * 90
    start = time.perf_counter()
    assert countdown.evaluate_program(nested, (1,) * 91) is None  # too long to be a program
    assert countdown.evaluate_program("1" + " - 1" * 60, (1,) * 61) == -59
    assert time.perf_counter() - start < 0.5


# --- path-star --------------------------------------------------------------------------------
def test_pathstar_answer_is_the_path_from_centre_to_goal():
    for degree, length in ((2, 4), (3, 2), (5, 5)):
        prompt, answer = make_graph(random.Random(degree), degree, length, n_labels=60)
        assert (prompt, answer) == make_graph(random.Random(degree), degree, length, n_labels=60)
        edges, start, goal = parse_prompt(prompt)
        path = [int(x) for x in answer.split()]
        assert len(edges) == degree * length and len(path) == length + 1
        assert path[0] == start and path[-1] == goal
        assert all(e in edges for e in zip(path, path[1:]))
        assert sum(u == start for u, _ in edges) == degree  # the centre has `degree` arms
        assert goal not in {u for u, _ in edges}  # the goal is a leaf
    with pytest.raises(ValueError):
        make_graph(random.Random(0), 5, 5, n_labels=20)


# --- end to end with tiny models (nothing heavy is trained) -----------------------------------
@pytest.fixture(scope="module")
def countdown_data(tmp_path_factory) -> Path:
    return countdown.prepare_countdown_corpus(tmp_path_factory.mktemp("countdown"), n_docs=300, tokenizer="bpe:300")


def tiny(kind: str, tok) -> ft.LanguageModel:
    cfg = ft.ModelConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=1, n_head=2, n_embd=32, horizon=3,
                         pseudo_len=2, dec_layer=1, dec_head=2)
    model = ft.MODELS[kind](cfg).eval()
    model.tokenizer = tok
    return model


def test_countdown_outcomes_per_held_out_problem(countdown_data):
    tok = load_tokenizer(countdown_data)
    settings = TaskSettings(n_eval=4, difficulties=(2, 3), max_number=12)
    for kind in ("gpt", "ftp"):
        out = countdown_outcomes(tiny(kind, tok), settings)
        assert list(out) == ["2 numbers", "3 numbers"]  # easiest first: the primary setting
        assert all(len(solved) == 4 and all(isinstance(s, bool) for s in solved) for solved in out.values())


def test_countdown_corpus_trains_and_evaluates_from_a_run_folder(countdown_data, tmp_path):
    cfg = RunConfig.from_dict({
        "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, "horizon": 2, "pseudo_len": 2,
                  "dec_layer": 1, "dec_head": 2},
        "data": {"dir": str(countdown_data)},
        "train": {"model": "ftp", "out_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 2,
                  "eval_interval": 2, "eval_batches": 1, "ckpt_interval": 2, "progress": False},
    })
    ft.train(cfg)
    out = countdown_outcomes(ft.load(tmp_path / "run", device="cpu"), TaskSettings(n_eval=2, difficulties=(2,)))
    assert list(out) == ["2 numbers"] and len(out["2 numbers"]) == 2


def test_pathstar_outcomes_per_held_out_graph(tmp_path):
    data = pathstar.prepare_pathstar_corpus(tmp_path, n_docs=100, settings=((2, 2),), n_labels=20, tokenizer="bpe:300")
    model = tiny("gpt", load_tokenizer(data))
    out = pathstar_outcomes(model, TaskSettings(n_eval=3, star_degree=2, star_length=2, star_labels=20))
    assert list(out) == ["degree 2, length 2"] and len(out["degree 2, length 2"]) == 3


def test_answer_loss_is_the_naive_per_problem_loss_over_answer_tokens(countdown_data):
    """Batched with right padding, it equals a plain loop that scores each problem alone, token by token."""
    import torch.nn.functional as F

    from futuretoken.eval.countdown import countdown_answers
    from futuretoken.eval.tasks import answer_loss

    tok = load_tokenizer(countdown_data)
    model = tiny("ftp", tok)
    pairs = countdown_answers(TaskSettings(n_eval=7, difficulties=(2,), max_number=12))
    total, count = 0.0, 0
    for prompt, answer in pairs:
        head, full = [tok.eot_token, *tok.encode(prompt)], [tok.eot_token, *tok.encode(f"{prompt} {answer}\n")]
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0].float()  # (L, V)
        for i in range(len(head), len(full)):  # token i is predicted at position i - 1
            total += float(F.cross_entropy(logits[i - 1 : i], torch.tensor([full[i]])))
            count += 1
    assert answer_loss(model, pairs, batch_size=3) == pytest.approx(total / count, rel=1e-5)
