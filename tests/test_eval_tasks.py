"""E6 (countdown as code), E7 (path-star graphs) and the sandbox that runs model-written code."""

import random
import sys
import uuid
from pathlib import Path

import pytest

import futuretoken as ft
from futuretoken.config import RunConfig
from futuretoken.data import load_tokenizer
from futuretoken.eval import countdown, pathstar, sandbox
from futuretoken.eval.countdown import Problem, countdown_experiment, make_problem, score, vet
from futuretoken.eval.pathstar import make_graph, parse_prompt, pathstar_experiment
from futuretoken.eval.sandbox import isolation, run_untrusted


# --- sandbox: each containment must trigger and be reported as a failure ----------------------
def test_sandbox_runs_a_correct_program():
    r = run_untrusted("import math\nprint(sum(range(10)), math.factorial(4))\nopen('f.txt', 'w').write('ok')")
    assert (r.ok, r.reason, r.stdout, r.error) == (True, "ok", "45 24\n", None)


def test_sandbox_kills_an_infinite_loop():
    r = run_untrusted("while True:\n    pass", timeout_s=1.0)
    assert not r.ok and r.reason == "timeout" and r.seconds < 3


def test_sandbox_kills_a_sleeping_loop_by_wall_clock():
    r = run_untrusted("import time\nwhile True:\n    time.sleep(0.05)", timeout_s=0.5)
    assert not r.ok and r.reason == "timeout" and r.seconds < 2


# Bounded (at most 2**6 processes, killed with their group): safe even if containment failed.
FORK_BOMB = "import os, time\nfor _ in range(6):\n    os.fork()\ntime.sleep(5)"


def test_sandbox_contains_a_fork_bomb():
    r = run_untrusted(FORK_BOMB, timeout_s=1.0)
    assert not r.ok and r.reason == "blocked" and "os.fork" in r.error
    for code in ("import subprocess\nsubprocess.run(['true'])", "import os\nos.system('true')",
                 "import os\nos.posix_spawn('/bin/true', ['true'], {})"):
        assert run_untrusted(code).reason == "blocked", code


def test_sandbox_fork_fails_at_os_level_without_the_audit_hook():
    """RLIMIT_NPROC alone (not root, or root dropped to `nobody`); bounded, in case it did not hold."""
    if not isolation().nproc_enforced:
        pytest.skip("root without an interpreter `nobody` can run: only the audit hook stops fork here")
    code = ("import os, time\nfor _ in range(20):\n    if os.fork() == 0:\n        time.sleep(2)\n        os._exit(0)\n"
            "print('forked')")
    r = run_untrusted(code, timeout_s=2.0, audit=False)
    assert not r.ok and "Resource temporarily unavailable" in r.error


def test_sandbox_contains_as_the_parents_own_user(monkeypatch, tmp_path):
    """No privilege drop (e.g. root where `nobody` cannot run Python): the audit hook still contains."""
    monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.Isolation(sys.executable, None, None))
    for code in (FORK_BOMB, f"open({str(tmp_path / 'x')!r}, 'w')", "import os\nos.kill(os.getpid(), 0)",
                 "import socket"):
        r = run_untrusted(code, timeout_s=1.0)
        assert not r.ok and r.reason == "blocked", code
    assert not (tmp_path / "x").exists()
    assert run_untrusted("x = bytearray(1 << 33)").reason == "memory"
    assert run_untrusted("print(6 * 7)").stdout == "42\n"


def test_sandbox_contains_a_huge_allocation():
    for code in ("x = bytearray(1 << 33)", "x = []\nwhile True:\n    x.append(' ' * 10**6)"):
        r = run_untrusted(code, memory_mb=128)
        assert not r.ok and r.reason == "memory", (code, r)


def test_sandbox_blocks_writes_outside_its_folder(tmp_path):
    targets = [tmp_path / "escape.txt", Path("/tmp") / f"ft-escape-{uuid.uuid4().hex}"]
    try:
        for target in targets:
            for code in (f"open({str(target)!r}, 'w').write('x')",
                         f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT)",
                         f"import os\nd = os.open({str(target.parent)!r}, os.O_RDONLY)\n"
                         f"os.open('{target.name}', os.O_WRONLY | os.O_CREAT, dir_fd=d)",
                         "open('../escape.txt', 'w')"):
                r = run_untrusted(code)
                # "error": the OS refused first (the child runs as `nobody`, tmp_path is root's)
                assert not r.ok and r.reason in ("blocked", "error"), code
                assert "blocked" in r.reason or "Permission denied" in r.error, r
            assert not target.exists()
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_sandbox_blocks_sockets_signals_and_raising_limits():
    for code in ("import socket\nsocket.socket().connect(('127.0.0.1', 9))", "import _socket\n_socket.socket()",
                 "import os\nos.kill(os.getpid(), 0)",
                 "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))"):
        r = run_untrusted(code)
        assert not r.ok and r.reason == "blocked", code
    caught = run_untrusted("try:\n    import socket\nexcept PermissionError:\n    pass\nprint('hidden')")
    assert not caught.ok and caught.reason == "blocked"  # a caught denial still fails the run


def test_sandbox_limits_output_and_reports_errors():
    assert run_untrusted("while True:\n    print('x' * 1000)", max_output_bytes=1 << 16).reason == "error"
    r = run_untrusted("1 / 0")
    assert r.reason == "error" and "ZeroDivisionError" in r.error


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


def test_countdown_scorer_rejects_bad_programs(monkeypatch):
    p = Problem(numbers=(3, 7, 2), target=23, solution="3 * 7 + 2")
    assert score(p, " 7 * 3 + 2 ") and score(p, "( 3 * 7 ) + 2") and score(p, "2+7*3")
    assert not score(p, "3 * 7 - 2")  # wrong value (runs in the sandbox)
    assert not score(p, "3 * 7 + 2 + 2")  # a number twice
    assert not score(p, "3 * 7")  # a number unused
    assert countdown.score_many([p] * 4, ["3*7", "2+3*7", "__import__('os')", "2-3*7"]) == [False, True, False, False]
    calls = []
    monkeypatch.setattr(countdown, "run_untrusted", lambda *a, **k: calls.append(a))
    for bad in ("__import__('os').system('x')", "while True: pass", "[0 for _ in iter(int, 1)]", "3 ** 7 ** 2",
                "3 * 7 + True", "3 * 7 + 2;", "", "x = 3 * 7 + 2", "(lambda: 23)()", "3 * 7 // 2", "3*7+-2"):
        assert vet(bad, p.numbers) is None and not score(p, bad), bad
    assert calls == []  # rejected before anything was executed


def test_countdown_scorer_fails_a_program_that_loops_in_the_sandbox():
    r = run_untrusted("while True:\n    pass", timeout_s=0.5)  # what score() would see past vetting
    assert r.reason == "timeout"


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


def test_countdown_experiment_smoke(countdown_data):
    tok = load_tokenizer(countdown_data)
    models = {"gpt": tiny("gpt", tok), "ftp": tiny("ftp", tok)}
    out = countdown_experiment(models, n_eval=4, difficulties=(2, 3), max_new_tokens=12)
    assert set(out) == {"gpt", "ftp"} and all(set(r) == {2, 3} for r in out.values())
    assert all(0.0 <= v <= 1.0 for r in out.values() for v in r.values())


def test_countdown_corpus_trains_and_evaluates_from_a_run_folder(countdown_data, tmp_path):
    cfg = RunConfig.from_dict({
        "model": {"block_size": 32, "n_layer": 1, "n_head": 2, "n_embd": 32, "horizon": 2, "pseudo_len": 2,
                  "dec_layer": 1, "dec_head": 2},
        "data": {"dir": str(countdown_data)},
        "train": {"model": "ftp", "out_dir": str(tmp_path / "run"), "batch_size": 4, "max_steps": 2,
                  "eval_interval": 2, "eval_batches": 1, "ckpt_interval": 2, "progress": False},
    })
    ft.train(cfg)
    out = countdown_experiment({"ftp": tmp_path / "run"}, n_eval=2, difficulties=(2,), max_new_tokens=8)
    assert 0.0 <= out["ftp"][2] <= 1.0


def test_pathstar_experiment_smoke(tmp_path):
    data = pathstar.prepare_pathstar_corpus(tmp_path, n_docs=100, settings=((2, 2),), n_labels=20, tokenizer="bpe:300")
    model = tiny("gpt", load_tokenizer(data))
    out = pathstar_experiment({"gpt": model}, settings=((2, 2),), n_eval=3, n_labels=20)
    assert set(out["gpt"]) == {(2, 2)} and 0.0 <= out["gpt"][(2, 2)] <= 1.0
