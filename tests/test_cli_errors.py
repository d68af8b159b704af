"""The command line promises clear errors: `futuretoken CMD: error: ...`, exit status 2, no traceback.

Every test here runs `futuretoken.cli.main` in this process (much faster than a child process):
an exception that escapes main() fails the test, a clear error is a SystemExit(2). The
property-based tests feed the commands that take paths and numbers with hostile ones.
"""

import json
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_config, run_main

CPU_EXPERIMENT = Path(__file__).parent.parent / "configs" / "experiments" / "cpu.toml"


def cli(capsys, *argv) -> tuple[int, str]:
    """(exit status, stderr) of `futuretoken ARGV`; a traceback would escape as the exception."""
    code, _, err = run_main(capsys, *argv)
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
    for text in ("[1]", "{"):  # not the tokenizer the run was trained with, whatever else is wrong with it
        (broken / "tokenizer.json").write_text(text)
        code, err = cli(capsys, "generate", broken, "alpha")
        assert code == 2 and f"{broken / 'tokenizer.json'} is not the tokenizer" in err and "Fix: copy" in err, err


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


# --- property-based: the commands that take paths and numbers, fed hostile ones ----------------------
NUMBERS = ["-1", "0", "1", "2", "0.5", "1e9", "-1e9", "nan", "inf", "-inf", "1e400", "true", "x", ""]
SMALL = ["-1", "0", "1", "2", "0.5", "nan", "inf", "true", "x", ""]  # where a valid huge number is just slow
INPUTS = ["file", "folder", "missing", "under a file", "binary", "bad jsonl", "good jsonl", "run", "data", "device"]
OUTPUTS = ["new", "file", "folder", "under a file", "read-only", "device"]
HOSTILE = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def mostly(valid: list[str], hostile: list[str]) -> st.SearchStrategy[str]:
    """A valid value three times in four: most examples pass the first check and reach the later ones."""
    return st.one_of(*[st.sampled_from(valid)] * 3, st.sampled_from(hostile))


@pytest.fixture(scope="module")
def paths(run, data_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("paths")
    (root / "file").write_text("alpha beta\ngamma delta\n")
    (root / "folder").mkdir()
    (root / "binary").write_bytes(b"\xff\xfe\x00\x01")
    (root / "bad.jsonl").write_text('{"text": 1}\n[2]\n{\n')
    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    (root / "good.jsonl").write_text("".join(json.dumps({"text": " ".join(words[(i + j) % 8] for j in range(30))})
                                             + "\n" for i in range(40)))  # enough tokens to train on
    return {"file": root / "file", "folder": root / "folder", "missing": root / "missing",
            "under a file": root / "file" / "x", "binary": root / "binary", "bad jsonl": root / "bad.jsonl",
            "good jsonl": root / "good.jsonl", "run": run, "data": Path(shutil.copytree(data_dir, root / "data")),
            "read-only": Path("/sys/kernel/futuretoken"), "device": Path("/dev/null")}


def path(paths: dict[str, Path], name: str) -> Path:
    """A fresh folder for "new" (each example writes its own), else the named path of the pool."""
    return paths["folder"].parent / "new" / uuid.uuid4().hex if name == "new" else paths[name]


@HOSTILE
@given(out=mostly(["new"], OUTPUTS), corpus=mostly(["good jsonl"], INPUTS), val=mostly(["0.2", "0.5"], NUMBERS),
       seed=mostly(["0", "3"], NUMBERS), tok=mostly(["bpe:260", "bpe:300"], ["bpe:0", "bpe:x", "bpe:99999", "x"]))
def test_data_prepare_with_hostile_paths_and_numbers(paths, capsys, out, corpus, val, seed, tok):
    cli(capsys, "data", "prepare", "--out", path(paths, out), "--corpus", path(paths, corpus),
        f"--val-fraction={val}", f"--seed={seed}", "--tokenizer", tok)


TRAIN_NUMBERS = {"train.lr": (["3e-3", "1e-2"], NUMBERS), "train.grad_clip": (["1.0", "0"], NUMBERS),
                 "train.weight_decay": (["0.1", "0"], NUMBERS), "train.batch_size": (["2", "4"], SMALL),
                 "train.warmup_steps": (["0", "1"], SMALL), "model.n_layer": (["1", "2"], SMALL + ["1e9"]),
                 "model.dropout": (["0.0", "0.1"], NUMBERS), "data.val_fraction": (["0.2", "0.5"], NUMBERS)}


@HOSTILE
@given(out=mostly(["new"], OUTPUTS + ["run"]),
       data=mostly(["data", "new"], ["file", "folder", "under a file", "read-only", "device"]),
       numbers=st.fixed_dictionaries({}, optional={k: mostly(*v) for k, v in TRAIN_NUMBERS.items()}))
def test_train_with_hostile_paths_and_numbers(paths, data_dir, capsys, out, data, numbers):
    argv = overrides(data_dir, path(paths, out))
    argv += [f"data.dir={json.dumps(str(path(paths, data)))}", f"data.corpus={json.dumps(str(paths['good jsonl']))}",
             "data.tokenizer='bpe:260'", *(f"{key}={value}" for key, value in numbers.items())]
    cli(capsys, "train", *argv)


@HOSTILE
@given(run=mostly(["run"], INPUTS), prompts=mostly(["file", "good jsonl"], INPUTS))
def test_generate_with_hostile_paths(paths, capsys, run, prompts):
    cli(capsys, "generate", path(paths, run), "--prompts-file", path(paths, prompts), "--max-new-tokens", "2")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.lists(st.sampled_from(["--temperature", "--top-k", "--top-p", "--max-new-tokens", "--strategy",
                                      "--draft-len", "-1", "0", "0.5", "2", "1e9", "nan", "ar", "speculative", "x"]),
                     max_size=6))
def test_generate_with_hostile_numbers(run, capsys, argv):
    cli(capsys, "generate", run, "alpha beta", *argv)


@HOSTILE
@given(run=mostly(["run"], INPUTS), texts=mostly(["file", "good jsonl"], INPUTS), out=mostly(["new"], OUTPUTS),
       suffix=st.sampled_from(["", ".npy", ".npz", ".parquet", "/"]), batch=mostly(["1", "32"], NUMBERS),
       pool=st.sampled_from(["mean", "last", "tokens"]))
def test_embed_with_hostile_paths_and_numbers(paths, capsys, run, texts, out, suffix, batch, pool):
    cli(capsys, "embed", path(paths, run), path(paths, texts), "--out", f"{path(paths, out)}{suffix}",
        f"--batch-size={batch}", "--pool", pool)


@HOSTILE
@given(steps=mostly(["1", "2"], NUMBERS), warmup=mostly(["0", "1"], NUMBERS), batch=mostly(["1", "4"], NUMBERS),
       preset=mostly(["tiny"], ["small", "huge", ""]), json_out=mostly(["new"], OUTPUTS))
def test_bench_train_with_hostile_paths_and_numbers(paths, capsys, monkeypatch, steps, warmup, batch, preset,
                                                    json_out):
    row = {"model": "gpt", "decoder_fraction": None, "activation_checkpointing": "none", "loss_impl": "torch",
           "step_s": 0.1, "tokens_per_s": 1.0, "flops_per_s": 1.0, "mfu": None, "peak_memory_bytes": 1,
           "saved_activation_bytes": 1}  # what a benchmark child prints: the children are not started here
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, json.dumps(row), ""))
    cli(capsys, "bench", "train", f"--steps={steps}", f"--warmup={warmup}", f"--batch-size={batch}", "--preset",
        preset, "--json", path(paths, json_out) / "bench.json")


@HOSTILE
@given(run=mostly(["run"], INPUTS), new=mostly(["1", "2"], NUMBERS), prompt=mostly(["1", "4"], NUMBERS),
       repeats=mostly(["1"], NUMBERS), json_out=mostly(["new"], OUTPUTS))
def test_bench_generate_with_hostile_paths_and_numbers(paths, capsys, run, new, prompt, repeats, json_out):
    cli(capsys, "bench", "generate", "--run", path(paths, run), f"--max-new-tokens={new}",
        f"--prompt-tokens={prompt}", f"--repeats={repeats}", "--json", path(paths, json_out) / "bench.json")


@settings(HOSTILE, max_examples=8)
@given(run=mostly(["run"], INPUTS), out=mostly(["new"], OUTPUTS))
def test_export_hf_with_hostile_paths(paths, capsys, run, out):
    cli(capsys, "export-hf", path(paths, run), path(paths, out))


@HOSTILE
@given(preset=mostly(["tiny"], ["gpt2-124m", "huge"]), vocab=mostly(["512"], NUMBERS + ["4194304", "4194305"]))
def test_summary_with_hostile_numbers(capsys, preset, vocab):
    cli(capsys, "summary", "--preset", preset, f"--vocab-size={vocab}")
