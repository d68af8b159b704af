"""File helpers shared by data preparation and checkpoints: hashes and atomic writes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def open_temp(folder: Path, name: str):
    """A new temporary file (binary, mode 644) beside `folder/name`, and its path."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)  # mkstemp's 600 would make the data private to this user
    return os.fdopen(fd, "wb"), tmp


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write `data` to `path` via a synced temporary file in the same folder and os.replace:
    readers see the old file or the new one, never a half-written one, even after a crash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = open_temp(path.parent, path.name)
    try:
        with f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
