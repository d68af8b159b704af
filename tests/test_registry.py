"""The registry is the one place an experiment is added: the README's example module, listed there,
is measured on every matched checkpoint, reaches the claims table and reads its own settings table."""

import json
import re
import sys
import types
from pathlib import Path

import pytest

from futuretoken.eval import registry
from futuretoken.eval.suite import SuiteSettings
from futuretoken.study import compare_runs
from test_reproduce import TOY_TABLE

README = Path(__file__).parent.parent / "README.md"


def readme_module() -> types.ModuleType:
    """The module the README's "Adding an experiment" shows, imported as futuretoken.eval.token_entropy."""
    code = re.search(r"```python\n# src/futuretoken/eval/token_entropy.py\n(.*?)```", README.read_text(), re.S)
    assert code, "the README's example experiment module is gone"
    module = types.ModuleType("futuretoken.eval.token_entropy")
    module.__package__ = "futuretoken.eval"
    sys.modules[module.__name__] = module
    exec(compile(code.group(1), "README.md", "exec"), module.__dict__)
    return module


@pytest.fixture
def with_readme_experiment(monkeypatch):
    module = readme_module()
    monkeypatch.setattr(registry, "EXPERIMENTS", (*registry.EXPERIMENTS, module.EXPERIMENT))  # the one line
    yield module.EXPERIMENT
    sys.modules.pop(module.__name__, None)


def test_a_registered_experiment_is_measured_tested_and_reported(with_readme_experiment, trained_runs, tmp_path):
    suite = SuiteSettings.from_dict({**TOY_TABLE, "token_entropy": {"batches": 1}})
    assert suite.of(with_readme_experiment).batches == 1  # its own [suite.token_entropy] table
    runs = {arm: {0: trained_runs / arm} for arm in ("gpt", "ftp", "mtp")}
    report = compare_runs(runs, "gpt", tmp_path, suite, device="cpu").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    for arm in ("ftp", "mtp"):
        pair = results["pairs"][arm][0]
        assert len(pair["arm"]["E8"]["per_window"]) == 16 and len(pair["baseline"]["E8"]["per_window"]) == 16
    rows = [r for r in results["rows"] if r["claim"] == "entropy"]
    assert [r["arm"] for r in rows] == ["ftp", "mtp"] and not any(r["primary"] for r in rows)
    assert rows[0]["arm_values"] == [results["pairs"]["ftp"][0]["arm"]["E8"]["mean"]]
    assert rows[0]["items"][0]["n"] == 16  # the item-level sign test over its windows
    assert "E8: next-token entropy (nats) (secondary)" in report
    assert results["settings"]["experiments"]["token_entropy"] == {"batches": 1}
