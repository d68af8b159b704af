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
