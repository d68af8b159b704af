import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

import futuretoken as ft
from futuretoken.config import RunConfig


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# The core guarantees run on every device present: CPU always, CUDA where there is one
# (`pytest -m cuda` selects just those; they are skipped, never failed, without a GPU).
DEVICES = ["cpu", pytest.param("cuda", marks=[
    pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")])]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def tiny_config(**overrides) -> ft.ModelConfig:
    base = dict(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, horizon=4,
                pseudo_len=3, dec_layer=2, dec_head=2)
    return ft.ModelConfig(**{**base, **overrides})


@pytest.fixture(params=["gpt", "ftp", "ftp-learned-start", "mtp", "mtp_seq"])
def model(request):
    kind, _, start = request.param.partition("-")
    return ft.MODELS[kind](tiny_config(decoder_start="learned" if start else "current")).eval()


WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()


@pytest.fixture(scope="session")
def eot_data_dir(tmp_path_factory) -> Path:
    """200 documents of 2-8 words: end-of-text tokens mask a large share of FTP's targets."""
    from futuretoken.data import prepare

    root = tmp_path_factory.mktemp("short_docs")
    g = torch.Generator().manual_seed(1)
    for i in range(200):
        words = [WORDS[j] for j in torch.randint(0, len(WORDS), (int(torch.randint(2, 9, (1,), generator=g)),),
                                                  generator=g)]
        (root / f"doc{i:03d}.txt").write_text(" ".join(words) + "\n")
    out = root / "prepared"
    prepare(corpus=str(root / "*.txt"), tokenizer="bpe:300", out_dir=out, val_fraction=0.1)
    return out


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> Path:
    """A small prepared corpus: 40 documents of pseudo-random words, BPE vocabulary 300."""
    from futuretoken.data import prepare

    root = tmp_path_factory.mktemp("corpus")
    g = torch.Generator().manual_seed(0)
    for i in range(40):
        words = [WORDS[j] for j in torch.randint(0, len(WORDS), (200,), generator=g)]
        (root / f"doc{i:02d}.txt").write_text(" ".join(words) + ".\n")
    out = root / "prepared"
    prepare(corpus=str(root / "*.txt"), tokenizer="bpe:300", out_dir=out, val_fraction=0.1)
    return out


def run_config(data_dir: Path, out_dir: Path, model: str = "ftp", **train) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"block_size": 16, "n_layer": 1, "n_head": 2, "n_embd": 32, "horizon": 3, "pseudo_len": 2,
                  "dec_layer": 1, "dec_head": 2, "dropout": 0.1},  # dropout: resume must restore the RNG
        "data": {"dir": str(data_dir)},
        "train": {"model": model, "out_dir": str(out_dir), "batch_size": 4, "max_steps": 12, "lr": 3e-3,
                  "warmup_steps": 2, "eval_interval": 4, "eval_batches": 2, "ckpt_interval": 4,
                  "log_interval": 1, "keep_last": 2, "progress": False, **train},
    })



@pytest.fixture(scope="session")
def trained_runs(data_dir, tmp_path_factory) -> Path:
    """ROOT/{ftp,gpt,mtp,mtp_seq}: tiny runs trained for 8 steps on the `data_dir` corpus. Read-only for tests."""
    from futuretoken.training import train

    root = tmp_path_factory.mktemp("runs")
    for model in ("ftp", "gpt", "mtp", "mtp_seq"):
        train(run_config(data_dir, root / model, model, max_steps=8, ckpt_interval=8, eval_interval=8))
    return root


def run_main(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `futuretoken ARGV` in this process (faster than run_cli). A
    failure must be the CLI's clear error: exit 2, "error: ", no traceback."""
    from futuretoken.cli import main

    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    if code != 0:
        assert code == 2 and "error: " in err and "Traceback" not in err, err
    return code, out, err


def run_cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    """`futuretoken ARGS` in a child process with one CPU thread (deterministic and fast)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "futuretoken.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@contextlib.contextmanager
def disk_full_after(limit: int):
    """Writes that would grow any file past `limit` bytes fail as on a full disk (RLIMIT_FSIZE, with
    SIGXFSZ ignored so that the write returns EFBIG): the real errors of torch, safetensors, numpy."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.fixture
def read_only_dir(tmp_path) -> Path:
    """A folder this process cannot write into: permission bits do not stop root, sysfs does."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        tempfile.TemporaryFile(dir="/sys/kernel").close()
    except OSError:
        if os.path.isdir("/sys/kernel"):
            return Path("/sys/kernel")
    pytest.skip("no folder here refuses root's writes")
