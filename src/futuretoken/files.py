"""File helpers shared by data preparation and checkpoints: hashes, atomic writes, locks."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
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


@contextlib.contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block's duration.

    flock waits without a timeout and is released by the kernel when the holder dies, so a
    process that waits here for another one's long job (preparing a corpus) never times out
    and never waits for a crashed holder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
