"""The README's examples run as written (those that need no trained run or extra download)."""

import re
from pathlib import Path

README = (Path(__file__).parent.parent / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_the_first_python_example_runs():
    namespace: dict = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)
    assert namespace["out"].hidden.shape == (2, 64, 128)
    assert namespace["loss"].per_distance.shape == (4,)


def test_readme_starts_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, flags=re.S).group(1).strip().splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]


def test_the_trained_run_example_runs(trained_runs):
    code = python_blocks()[1].replace('"runs/demo/ftp/seed-0"', repr(str(trained_runs / "ftp")))
    namespace: dict = {}
    exec(compile(python_blocks()[0], "README.md", "exec"), namespace)  # read top-down: imports come first
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["vectors"].shape == (2, 32)


def test_the_hugging_face_examples_run_as_written(data_dir, tmp_path, monkeypatch):
    """"Use it from Hugging Face": its export command and its Python block, verbatim, on CPU, in a folder laid
    out as `make demo` leaves it (a small FTP run as runs/demo/ftp/seed-0, its data as the demo's)."""
    import shlex
    import subprocess
    import sys

    import pytest

    pytest.importorskip("lm_eval")
    pytest.importorskip("sentence_transformers")
    from conftest import run_config
    from futuretoken.training import train

    section = README[README.index("## Use it from Hugging Face"):]
    bash = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    cfg = run_config(data_dir, tmp_path / "runs" / "demo" / "ftp" / "seed-0", "ftp", max_steps=4, ckpt_interval=4,
                     eval_interval=4)
    cfg.model.block_size, cfg.model.horizon = 64, 4  # as the demo's: room for 20 new tokens, drafts of 4
    train(cfg)
    (tmp_path / "runs" / "data").mkdir()
    (tmp_path / "runs" / "data" / "prose-bpe1024").symlink_to(data_dir)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for line in bash.strip().splitlines():
        args = shlex.split(line.split("#")[0])
        assert args[0] == "futuretoken"
        done = subprocess.run([sys.executable, "-m", "futuretoken.cli", *args[1:]], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    namespace: dict = {}
    exec(compile(python, "README.md", "exec"), namespace)
    assert namespace["out"].shape[0] == 2 and namespace["vectors"].shape == (2, cfg.model.n_embd)
    assert (tmp_path / "runs" / "hf" / "ftp-copy" / "modeling_futuretoken.py").is_file()


def test_the_train_on_your_own_text_recipe_runs_as_written(tmp_path, monkeypatch):
    import shlex
    import subprocess
    import sys

    from conftest import WORDS

    section = README[README.index("### Train on your own text"):]
    bash = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    (tmp_path / "my_texts").mkdir()
    for i in range(30):  # a small folder of .txt documents
        words = [WORDS[(7 * i + 3 * j) % len(WORDS)] for j in range(300)]
        (tmp_path / "my_texts" / f"doc{i}.txt").write_text(" ".join(words) + ".\n")
    monkeypatch.chdir(tmp_path)
    for line in bash.strip().splitlines():
        args = shlex.split(line.split("  #")[0])
        assert args[0] == "futuretoken"
        done = subprocess.run([sys.executable, "-m", "futuretoken.cli", *args[1:]], capture_output=True, text=True,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
        assert done.returncode == 0, f"{line}\n{done.stderr}"
    assert done.stdout.startswith("Once upon a time") and len(done.stdout) > len("Once upon a time")
