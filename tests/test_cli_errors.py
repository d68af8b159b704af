"""The command line promises clear errors: `futuretoken CMD: error: ...`, exit status 2, no traceback.

Every test here runs `futuretoken.cli.main` in this process (much faster than a child process):
an exception that escapes main() fails the test, a clear error is a SystemExit(2).
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import run_config
from futuretoken.cli import main

CPU_EXPERIMENT = Path(__file__).parent.parent / "configs" / "experiments" / "cpu.toml"


def cli(capsys, *argv) -> tuple[int, str]:
    """(exit status, stderr) of `futuretoken ARGV`; a traceback would escape as the exception."""
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    if code != 0:
        assert code == 2 and "error: " in err and "Traceback" not in err, err
    return code, err


def overrides(data_dir: Path, out: Path, **train) -> list[str]:
    """`table.key=value` arguments for a tiny run (run_config's) of 2 steps."""
    cfg = run_config(data_dir, out, max_steps=2, eval_interval=2, ckpt_interval=2, **train).to_dict()
    return [f"{table}.{key}={json.dumps(value)}" for table, values in cfg.items() for key, value in values.items()
            if value is not None]


@pytest.fixture(scope="module")
def run(trained_runs, tmp_path_factory) -> Path:
    """A copy of the trained FTP run that tests may damage."""
    return Path(shutil.copytree(trained_runs / "ftp", tmp_path_factory.mktemp("cli") / "run"))


# --- paths -------------------------------------------------------------------------------------------
def test_output_and_data_folders_that_are_files_or_read_only_are_clear_errors(run, data_dir, tmp_path,
                                                                              read_only_dir, capsys):
    afile = tmp_path / "a-file"
    afile.write_text("x")
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha beta\n")
    cases = [
        (["data", "prepare", "--corpus", texts, "--out", afile], "data folder .*a-file is not a folder"),
        (["data", "prepare", "--corpus", texts, "--out", read_only_dir / "d"], "data folder .* cannot be written"),
        (["train", *overrides(data_dir, afile / "run")], "train.out_dir .*a-file/run is not a folder"),
        (["train", *overrides(data_dir, read_only_dir / "run")], "train.out_dir .* cannot be written"),
        (["train", *overrides(afile, tmp_path / "run2")], "data folder .*a-file is not a folder"),
        (["embed", run, texts, "--out", afile / "v.npy"], "--out folder .*a-file is not a folder"),
        (["export-hf", run, afile], "export folder .*a-file is not a folder"),
        (["bench", "train", "--json", afile / "b.json"], "--json folder .*a-file is not a folder"),
        (["eval", run, "--out", afile, "--quick"], "--out folder .*a-file is not a folder"),
        (["compare", run, run, "--out", read_only_dir / "cmp", "--quick"], "--out folder .* cannot be written"),
        (["reproduce", "--config", CPU_EXPERIMENT, "--out", afile], "--out folder .* is not a folder"),
        (["demo", "--out", afile], "demo folder .*a-file is not a folder"),
    ]
    for argv, message in cases:
        code, err = cli(capsys, *argv)
        assert code == 2 and re.search(message, err), (argv, err)


def test_input_files_that_are_folders_or_malformed_name_the_file(run, tmp_path, capsys):
    folder = tmp_path / "prompts"
    folder.mkdir()
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00")
    cases = [([folder], f"{folder} is a folder, not a file"), ([binary], f"{binary} is not UTF-8")]
    for i, (line, problem) in enumerate((("{", "is not valid JSON"), ("[1, 2]", "has no string field 'text'"),
                                         ('{"body": "x"}', "has no string field 'text'"),
                                         ('{"text": 3}', "has no string field"))):
        bad_jsonl = tmp_path / f"bad{i}.jsonl"
        bad_jsonl.write_text(line + "\n")
        cases.append(([bad_jsonl], f"{bad_jsonl}:1 {problem}"))
    for files, message in cases:
        for argv in (["generate", run, "--prompts-file", *files], ["embed", run, *files, "--out", tmp_path / "v"]):
            code, err = cli(capsys, *argv)
            assert code == 2 and message in err, (argv, err)
    code, err = cli(capsys, "train", "--config", folder)
    assert code == 2 and f"config file {folder} is a folder" in err


def test_a_malformed_tokenizer_in_a_run_names_the_file(run, tmp_path, capsys):
    broken = Path(shutil.copytree(run, tmp_path / "run"))
    for text, problem in (("[1]", "not a tokenizers JSON file"), ("{", "is not valid JSON")):
        (broken / "tokenizer.json").write_text(text)
        code, err = cli(capsys, "generate", broken, "alpha")
        assert code == 2 and f"{broken / 'tokenizer.json'}" in err and problem in err, err


def test_embed_reports_the_file_it_wrote(run, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha beta\ngamma\n")
    for out, pool, written in (("v", "mean", "v.npy"), ("u.npy", "last", "u.npy"), ("t", "tokens", "t.npz"),
                               ("s.npz", "tokens", "s.npz"), ("x.txt", "mean", "x.txt.npy")):
        code, err = cli(capsys, "embed", run, texts, "--pool", pool, "--out", tmp_path / out)
        assert code == 0 and err.strip().endswith(f"to {tmp_path / written}"), err
        assert (tmp_path / written).is_file()


# --- numbers and devices -------------------------------------------------------------------------------
def test_bench_train_refuses_numbers_it_cannot_measure(capsys, monkeypatch):
    def no_child(*args, **kwargs):
        raise AssertionError("a benchmark child was started for an invalid request")

    monkeypatch.setattr(subprocess, "run", no_child)
    for argv, message in ((["--steps", "0"], "steps=0 is invalid"), (["--warmup", "-1"], "warmup=-1 is invalid"),
                          (["--batch-size", "0"], "batch_size=0 is invalid"), (["--preset", "huge"], "unknown preset")):
        code, err = cli(capsys, "bench", "train", *argv)
        assert code == 2 and message in err, err


def test_a_device_that_is_not_there_is_a_clear_error_for_every_command(run, data_dir, tmp_path, capsys):
    missing = f"cuda:{torch.cuda.device_count() + 7}"  # on every machine, with or without CUDA
    texts = tmp_path / "texts.txt"
    texts.write_text("alpha\n")
    commands = [
        ["generate", run, "alpha", "--device", missing],
        ["embed", run, texts, "--out", tmp_path / "v", "--device", missing],
        ["eval", run, "--out", tmp_path / "e", "--quick", "--device", missing],
        ["compare", run, run, "--out", tmp_path / "c", "--quick", "--device", missing],
        ["bench", "train", "--device", missing], ["bench", "generate", "--run", run, "--device", missing],
        ["train", *overrides(data_dir, tmp_path / "run", device=missing)],
        ["reproduce", "--config", CPU_EXPERIMENT, "--out", tmp_path / "r", "--device", missing],
        ["demo", "--out", tmp_path / "demo", "--device", missing],
    ]
    for argv in commands:
        code, err = cli(capsys, *argv)
        assert code == 2 and f"device='{missing}'" in err, (argv, err)
