"""File helpers shared by data preparation and checkpoints: hashes, atomic writes, locks, folders.

Every temporary name made here has the form `.NAME.XXXX.tmp` (`.step-N.tmp` for checkpoint
folders): `remove_temporaries` recognises what a killed writer left behind by that form alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TEMPORARY = ".*.tmp"  # glob of every temporary file or folder name


class PathError(ValueError):
    """A path cannot be used as given (a file where a folder is needed, not writable); the message
    names it and the fix."""


class LockHeld(RuntimeError):
    """Another process holds a lock that was asked for without waiting."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is locked by process {holder or '(unknown)'}")
        self.path, self.holder = path, holder or "(unknown)"


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


def fsync_dir(path: Path) -> None:
    """Make renames and deletions inside `path` durable (they live in the folder's own entry)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def remove_temporaries(folder: str | Path) -> None:
    """Delete the temporary files and folders a killed writer left in `folder`. Only call it while
    holding the lock that keeps every other writer of `folder` out."""
    for path in Path(folder).glob(TEMPORARY):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def writable_dir(path: str | Path, what: str) -> Path:
    """`path` as a folder this process can write into, created with its parents when missing.
    A file in the way or a folder that refuses writes is a PathError naming `what` and the fix."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # root ignores permission bits: only a real write tells
    except (FileExistsError, NotADirectoryError):
        raise PathError(f"{what} {path} is not a folder: it, or a folder above it, is a file. "
                        "Fix: give the path of a folder (it is created when missing)") from None
    except OSError as err:
        raise PathError(f"{what} {path} cannot be written to ({err.strerror}). "
                        "Fix: fix its permissions or free disk space, or choose another folder") from None
    return path


def not_a_file(path: Path) -> str:
    """Why `path` cannot be read as a file, for an error message."""
    if path.is_dir():
        return "is a folder, not a file"
    return "is not a regular file" if path.exists() else "does not exist"


def read_json(path: str | Path, error: type[Exception] = ValueError, fix: str = "") -> Any:
    """The JSON document in `path`. A missing, unreadable, non-UTF-8 or malformed file raises `error`
    with a message that names the file and ends with `fix`."""
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        problem = "does not exist"
    except UnicodeDecodeError as err:
        problem = f"is not UTF-8 text (byte {err.start})"
    except json.JSONDecodeError as err:
        problem = f"is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})"
    except OSError as err:  # a folder, no permission, an I/O error
        problem = f"cannot be read ({err.strerror})"
    raise error(f"{path} {problem}. {fix}".strip())


@contextlib.contextmanager
def file_lock(path: str | Path, wait: bool = True) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the block's duration.

    flock is released by the kernel when the holder dies, so nobody ever waits for a crashed
    holder. wait=True waits without a timeout (a process that waits for another one's long
    job, e.g. preparing a corpus, never times out); wait=False raises LockHeld at once, naming
    the holder's pid, which every holder writes into the file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            handle.seek(0)
            raise LockHeld(path, handle.read().strip()) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
