"""The command line end to end on a small trained run: generate, embed, bench, summary, errors."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli


@pytest.fixture
def runs(trained_runs):
    return trained_runs


def test_generate_greedy_speculative_equals_ar(runs):
    common = ("generate", str(runs / "ftp"), "alpha beta gamma", "--temperature", "0", "--max-new-tokens", "6")
    ar, spec = run_cli(*common), run_cli(*common, "--strategy", "speculative")
    assert ar.returncode == 0 and spec.returncode == 0, ar.stderr + spec.stderr
    assert ar.stdout.startswith("alpha beta gamma") and len(ar.stdout) > len("alpha beta gamma")
    assert ar.stdout == spec.stdout
    assert "tokens per encoder pass" in spec.stderr
    assert re.search(r"\d+% of drafted tokens accepted", spec.stderr), spec.stderr
    assert "accepted" not in ar.stderr


def test_generate_from_a_prompts_file(runs, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("alpha beta\ngamma\ndelta epsilon zeta\n")
    out = run_cli("generate", str(runs / "gpt"), "--prompts-file", str(prompts), "--max-new-tokens", "4")
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("=== prompt") == 3


@pytest.mark.parametrize(
    "args,message",
    [
        (("gpt", "alpha", "--strategy", "speculative"), "needs a model that drafts several tokens"),
        (("ftp", ""), "empty"),
        (("ftp", "alpha", "--temperature", "-1"), "temperature"),
        (("ftp", "alpha", "--top-p", "1.5"), "top_p"),
        (("ftp", "alpha " * 40), "block_size"),
    ],
)
def test_generate_errors_are_clear(runs, args, message):
    out = run_cli("generate", str(runs / args[0]), *args[1:])
    assert out.returncode == 2, out.stdout
    assert message in out.stderr and "Traceback" not in out.stderr


def test_embed_writes_vectors(runs, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha beta\ngamma delta epsilon\n")
    out = run_cli("embed", str(runs / "ftp"), str(texts), "--pool", "mean", "--out", str(tmp_path / "v.npy"))
    assert out.returncode == 0, out.stderr
    vectors = np.load(tmp_path / "v.npy")
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()


def test_bench_generate_checks_speculative_against_ar(runs, tmp_path):
    out = run_cli("bench", "generate", "--run", str(runs / "ftp"), "--json", str(tmp_path / "b.json"),
                  "--max-new-tokens", "4", "--prompt-tokens", "4", "--repeats", "1")
    assert out.returncode == 0, out.stderr
    result = json.loads((tmp_path / "b.json").read_text())
    assert {r["strategy"] for r in result["results"]} == {"ar", "rollout", "speculative"}
    assert all(r["identical_to_ar"] for r in result["results"] if r["strategy"] == "speculative")
    assert "CPU" in result["device"]


def test_summary_prints_both_models():
    out = run_cli("summary", "--preset", "tiny")
    assert out.returncode == 0 and "GPT" in out.stdout and "FTP" in out.stdout


def test_python_api_text_in_text_out(runs):
    import futuretoken as ft

    model = ft.load(runs / "ftp")
    text = ft.generate_text(model, "alpha beta", max_new_tokens=5, sampling=ft.SamplingConfig(temperature=0))
    assert text.startswith("alpha beta") and len(text) > len("alpha beta")
    assert ft.embed(model, ["alpha beta", "gamma"], pool="last").shape == (2, 32)


def _options(parser, path=()):
    """(command path, option) for every argument of every sub-command."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_of_every_command_says_what_it_does():
    from futuretoken.cli import build_parser

    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _options(build_parser()) if not a.help]
    assert not missing, missing


def test_help_starts_without_importing_torch():
    """--help of every command answers at once: nothing heavy is imported to build the parser."""
    code = ("import sys, contextlib, io\n"
            "from futuretoken.cli import build_parser\n"
            "for argv in ([], ['train'], ['generate'], ['reproduce'], ['bench', 'train'], ['data', 'prepare']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        build_parser().parse_args([*argv, '--help'])\n"
            "import futuretoken\n"
            "print(sorted(m for m in ('torch', 'numpy', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_config_gives_every_key_its_default_meaning_and_allowed_values(capsys):
    from futuretoken.cli import print_config_keys
    from futuretoken.config import ALLOWED, DataConfig, ModelConfig, TrainConfig, describe

    print_config_keys()
    shown = capsys.readouterr().out
    for cls in (ModelConfig, DataConfig, TrainConfig):
        for key, default, meaning in describe(cls):
            assert meaning, f"{cls.__name__}.{key} has no comment to explain it"
            line = next(line for line in shown.splitlines() if line.strip().startswith(f"{key} = "))
            assert all(choice in line for choice in ALLOWED.get(key, ())), line
    assert 'schedule = "cosine"  # cosine' in shown and "tiny | small | gpt2-124m" in shown


def test_the_package_exports_what_it_lists():
    import futuretoken

    assert set(futuretoken.__all__) == set(futuretoken._EXPORTS) | {"__version__"}
    assert all(getattr(futuretoken, name) is not None for name in futuretoken.__all__)


def test_compare_settings_file_overrides_the_suite_where_an_error_says_to(tmp_path):
    from futuretoken.cli import _suite
    from futuretoken.eval.smoothness import EXPERIMENT as SMOOTHNESS
    from futuretoken.eval.windows import document_windows

    with pytest.raises(ValueError, match=r"\[suite.smoothness\] min_windows .* --settings file \(compare, eval\)"):
        document_windows(np.arange(40) % 7, eot=0, window=32)
    path = tmp_path / "s.toml"
    path.write_text("[suite]\neval_batches = 3\n[suite.smoothness]\nmin_windows = 8\n")
    settings = _suite(True, str(path))
    assert settings.eval_batches == 3 and settings.of(SMOOTHNESS).min_windows == 8
    assert settings.of(SMOOTHNESS).per_document == _suite(True).of(SMOOTHNESS).per_document  # the rest: --quick's
    path.write_text("[train]\nlr = 1\n")
    with pytest.raises(ValueError, match=r"holds \[suite\] and \[suite.NAME\] only"):
        _suite(False, str(path))
