"""Benchmarks say where and under what load they ran, and run with OpenMP threads that do not spin."""

import os
import sys

import pytest
import torch

from futuretoken import cli
from futuretoken.bench.env import environment
from futuretoken.bench.train import child_env


def test_the_json_records_threads_wait_policy_and_load(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    env = environment(torch.device("cpu"))
    assert env["threads"] == torch.get_num_threads() and env["omp_wait_policy"] == "PASSIVE"
    assert len(env["load_average_1_5_15_min"]) == 3 and env["cpu_count"] == os.cpu_count()
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert environment(torch.device("cpu"))["omp_wait_policy"].startswith("unset")
    assert child_env()["OMP_WAIT_POLICY"] == "PASSIVE"  # the measuring children, unless told otherwise
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert child_env()["OMP_WAIT_POLICY"] == "ACTIVE"


class Exec(Exception):
    pass


def test_bench_restarts_itself_with_a_passive_wait_policy_unless_one_is_set(monkeypatch):
    calls = []

    def execve(path, argv, env):
        calls.append((argv, env))
        raise Exec

    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(sys, "argv", ["futuretoken", "bench", "train", "--steps", "0"])
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(Exec):
        cli.main()
    argv, env = calls[0]
    assert argv[1:] == ["-m", "futuretoken.cli", "bench", "train", "--steps", "0"] and env["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # told otherwise: no restart (here: the usual error for --steps 0)
    with pytest.raises(SystemExit):
        cli.main()
    assert len(calls) == 1
