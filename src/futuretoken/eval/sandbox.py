"""Run untrusted (model-written) Python in a contained child process.

    result = run_untrusted("print(3 * 7 + 2)", timeout_s=2.0, memory_mb=256)
    result.ok, result.stdout, result.reason   # True, "23\\n", "ok"

Protocol. Every call gets a fresh temporary folder `T` (0711) holding the child's working
folder `T/work` and the files that receive its stdout and stderr. The child is
`PYTHON -I -S -B -c PRELUDE` (isolated mode: no site-packages, no PYTHON* variables, no user
site, no .pyc writes) with an empty environment, `cwd=T/work`, its own session (so its whole
process group can be killed) and the program on stdin. The prelude reads the program, sets
the resource limits, installs an audit hook, then `exec`s the program in a fresh namespace.

Containment, layer by layer (each verified as root on Linux, see tests/test_eval_tasks.py):
- wall clock: the parent polls until `timeout_s`, then SIGKILLs the process group (before
  reaping the leader, so the group id cannot have been reused) -> reason "timeout".
- RLIMIT_CPU (timeout + 1 s; SIGKILL one second later) as a backstop -> "timeout".
- RLIMIT_AS = memory_mb: allocations fail with MemoryError -> "memory".
- RLIMIT_FSIZE = max_output_bytes: for files the program writes AND for its stdout/stderr
  (they are files, not pipes, so a print loop cannot flood the parent's memory).
- RLIMIT_NOFILE (max_open_files), RLIMIT_CORE = 0, RLIMIT_NPROC = 0 (no fork, no threads).
- Privileges. RLIMIT_NPROC is NOT enforced for root (the kernel exempts CAP_SYS_RESOURCE /
  CAP_SYS_ADMIN), and root could raise its own hard limits. So when the parent runs as root
  the child is started as user `nobody` (Popen user/group, no supplementary groups), with
  the first interpreter `nobody` can run (`sys.executable`, else /usr/bin/python3: the
  child needs only the standard library). `isolation()` says what this machine got; if no
  interpreter works as `nobody`, the child stays root and the audit hook is the only guard
  against fork, kill and setrlimit.
- Audit hook (PEP 578), always on unless `audit=False`: denies process creation (os.fork,
  os.posix_spawn, os.system, os.exec*, subprocess), signals (os.kill, os.killpg), raising
  limits (resource.setrlimit), every socket event and the import of socket, ssl, ctypes,
  subprocess, multiprocessing, mmap; writes, renames, deletes, chmods... of paths outside
  `T/work` (symlinks and dir_fd resolved), opening directories outside it (no dir_fd
  escapes) and device nodes inside it (root can mknod); os.link / os.symlink; gc object
  walking, sys.settrace / setprofile and rewriting the hook's code or defaults. A denied
  operation raises PermissionError in the child and writes a marker to its stderr -> reason
  "blocked", even if the program catches the error.
  Audit hooks are a tripwire, not a security boundary (PEP 578 says so: code written to
  defeat them, e.g. by monkeypatching the stdlib that the hook relies on, can). The boundary
  is the separate process, its limits and its unprivileged user; E6 additionally never
  executes anything but a whitelisted arithmetic expression (see countdown.py).
Not provided: a network namespace or seccomp filter (Python 3.11 has no os.unshare, and
neither works unprivileged everywhere); reads outside the folder are allowed (the child
needs the standard library). Run evaluations in a container without network for more.

Reasons: "ok" (exit 0, nothing denied), "timeout", "memory", "blocked", "error" (an
exception or a non-zero exit, e.g. the output limit: "File too large"), "crashed" (killed
by a signal other than the time limits).
"""

from __future__ import annotations

import functools
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BLOCK_MARK = "[sandbox] blocked:"
EXIT_MEMORY = 86
UNPRIVILEGED_USER = "nobody"
FALLBACK_PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")

# Runs in the child as `python -I -S -B -c PRELUDE MEM CPU FSIZE NOFILE AUDIT`. Compatible with 3.8+.
PRELUDE = r'''
import os, stat, sys, resource, traceback

def _limits(mem, cpu, fsize, nofile):
    R = resource
    for res, soft, hard in ((R.RLIMIT_AS, mem, mem), (R.RLIMIT_CPU, cpu, cpu + 1), (R.RLIMIT_FSIZE, fsize, fsize),
                            (R.RLIMIT_NOFILE, nofile, nofile), (R.RLIMIT_NPROC, 0, 0), (R.RLIMIT_CORE, 0, 0)):
        R.setrlimit(res, (soft, hard))

def _hook_for(root):
    """The audit hook. Everything it uses is bound now (defaults): the program cannot swap it."""
    deny_events = frozenset((
        "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn", "os.system", "os.exec", "os.startfile",
        "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit",
        "resource.prlimit", "os.link", "os.symlink", "gc.get_objects", "gc.get_referrers",
        "gc.get_referents", "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions"))
    deny_prefixes = ("socket.", "ctypes.", "_ctypes.", "mmap.", "winreg.", "_winapi.")
    deny_modules = frozenset((
        "socket", "_socket", "ssl", "_ssl", "ctypes", "_ctypes", "subprocess", "_posixsubprocess",
        "multiprocessing", "_multiprocessing", "mmap", "pty", "asyncio"))
    # event -> ((position of a path argument, position of its dir_fd argument or None), ...)
    path_events = {"os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
                   "os.rename": ((0, 2), (1, 3)), "os.chmod": ((0, 2),), "os.chown": ((0, 3),),
                   "os.utime": ((0, 3),), "os.truncate": ((0, None),), "os.setxattr": ((0, None),),
                   "os.removexattr": ((0, None),), "shutil.rmtree": ((0, 1),)}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def hook(event, args, root=root, deny_events=deny_events, deny_prefixes=deny_prefixes,
             deny_modules=deny_modules, path_events=path_events, write_flags=write_flags,
             realpath=os.path.realpath, join=os.path.join, isdir=os.path.isdir, fsdecode=os.fsdecode,
             write=os.write, stat=os.stat, S_ISBLK=stat.S_ISBLK, S_ISCHR=stat.S_ISCHR,
             isinstance=isinstance, str=str, int=int, len=len, OSError=OSError, denied=PermissionError,
             protected=frozenset(("__code__", "__defaults__", "__kwdefaults__", "__globals__"))):
        def deny(detail=""):
            what = event + (" " + detail if detail else "")
            write(2, ("\n[sandbox] blocked: " + what + "\n").encode("utf-8", "replace"))
            raise denied("sandbox: " + what + " is not allowed")

        def inside(path, dir_fd=None):  # a real path (not an fd) under the working folder
            if isinstance(path, int) or path is None:
                return False
            base = "" if dir_fd is None or dir_fd == -1 else realpath("/proc/self/fd/" + str(dir_fd))
            p = realpath(join(base, fsdecode(path)))
            return p == root or p.startswith(root + "/")

        if event in deny_events or event.startswith(deny_prefixes):
            deny()
        elif event == "import":
            if args[0].partition(".")[0] in deny_modules:
                deny(args[0])
        elif event == "open":
            path, mode, flags = args
            if isinstance(path, int):
                return
            if inside(path):
                try:  # a device node made inside (root can mknod) must not be a way out
                    mode_bits = stat(fsdecode(path)).st_mode
                    device = S_ISBLK(mode_bits) or S_ISCHR(mode_bits)
                except OSError:
                    device = False
                if device:
                    deny(fsdecode(path))
                return
            writing = (mode is None and flags & write_flags) or (isinstance(mode, str) and (
                "w" in mode or "a" in mode or "x" in mode or "+" in mode))
            if writing or isdir(fsdecode(path)):  # no directory fds outside: no dir_fd escapes
                deny(fsdecode(path))
        elif event in path_events:
            for i, j in path_events[event]:
                if not inside(args[i], None if j is None or j >= len(args) else args[j]):
                    deny(str(args[i]))
        elif event == "object.__setattr__" and args[0] is hook and args[1] in protected:
            deny()

    return hook

def _main():
    mem, cpu, fsize, nofile, audit = (int(a) for a in sys.argv[1:6])
    del sys.argv[1:]
    _limits(mem, cpu, fsize, nofile)
    code = compile(sys.stdin.buffer.read().decode("utf-8", "replace"), "<untrusted>", "exec")
    if audit:
        sys.addaudithook(_hook_for(os.path.realpath(os.getcwd())))
    return code

_code = _main()
_exit, _print_exc = os._exit, traceback.print_exc
del _main, _hook_for, _limits, os, stat, sys, resource, traceback
try:
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
except MemoryError:
    _exit(86)
except SystemExit:
    raise
except BaseException:
    _print_exc()
    _exit(1)
'''


@dataclass(frozen=True)
class SandboxResult:
    ok: bool  # exited 0 within the limits and nothing was denied
    stdout: str  # at most max_output_bytes
    error: str | None  # why it failed: stderr's tail or a sentence
    reason: str  # ok | timeout | memory | blocked | error | crashed
    returncode: int | None
    seconds: float


@dataclass(frozen=True)
class Isolation:
    """How children are started on this machine (decided once per process by `isolation()`)."""

    python: str  # interpreter that runs the child
    uid: int | None  # user the child runs as; None: the parent's own user
    gid: int | None

    @property
    def nproc_enforced(self) -> bool:
        """RLIMIT_NPROC binds the child (the kernel exempts root): fork fails even without the audit hook."""
        return self.uid is not None or os.geteuid() != 0


def _runs_as(python: str, uid: int, gid: int) -> bool:
    try:
        probe = "import sys, resource; sys.exit(sys.version_info < (3, 8))"
        done = subprocess.run([python, "-I", "-S", "-B", "-c", probe], user=uid, group=gid, extra_groups=[], cwd="/",
                              env={}, timeout=30, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=None)
def isolation() -> Isolation:
    """Not root: the child runs as the parent's user. Root: as `nobody` with the first interpreter it can run."""
    if os.geteuid() != 0:
        return Isolation(sys.executable, None, None)
    try:
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        return Isolation(sys.executable, None, None)
    for python in dict.fromkeys((sys.executable, *FALLBACK_PYTHONS)):
        if os.path.exists(python) and _runs_as(python, pw.pw_uid, pw.pw_gid):
            return Isolation(python, pw.pw_uid, pw.pw_gid)
    return Isolation(sys.executable, None, None)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_unreaped(proc: subprocess.Popen, deadline: float, poll_s: float) -> bool:
    """Wait until the child exits or the deadline passes (-> True) WITHOUT reaping it, so that
    killing its process group afterwards cannot hit a reused id. (No os.waitid, e.g. macOS
    before Python 3.13: plain wait, which reaps.)"""
    if not hasattr(os, "waitid"):
        try:
            proc.wait(timeout=max(0.0, deadline - time.perf_counter()))
            return False
        except subprocess.TimeoutExpired:
            return True
    while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.perf_counter() > deadline:
            return True
        time.sleep(poll_s)
    return False


def _read(path: Path, limit: int) -> str:
    with open(path, "rb") as f:
        return f.read(limit).decode("utf-8", "replace")


def run_untrusted(code: str, timeout_s: float = 2.0, memory_mb: int = 256, *, max_output_bytes: int = 1 << 20,
                  max_open_files: int = 32, audit: bool = True, poll_s: float = 0.002) -> SandboxResult:
    """Run `code` (a Python program) in a contained child process; see the module docstring.

    audit=False leaves only the OS mechanisms (to test them on their own).
    """
    iso = isolation()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ft-sandbox-") as tmp:
        tmp_path = Path(tmp)
        work = tmp_path / "work"
        work.mkdir()
        user_args: dict = {}
        if iso.uid is not None:
            os.chmod(tmp_path, 0o711)  # `nobody` may enter, not list
            os.chown(work, iso.uid, iso.gid)
            user_args = dict(user=iso.uid, group=iso.gid, extra_groups=[])
        argv = [iso.python, "-I", "-S", "-B", "-c", PRELUDE, str(memory_mb << 20), str(int(timeout_s) + 1),
                str(max_output_bytes), str(max_open_files), str(int(audit))]
        with open(tmp_path / "stdout", "wb") as out, open(tmp_path / "stderr", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=work, env={},
                                    start_new_session=True, close_fds=True, **user_args)
        try:
            try:
                proc.stdin.write(code.encode("utf-8", "replace"))
                proc.stdin.close()
            except BrokenPipeError:  # the child died before reading: its status says why
                pass
            timed_out = _wait_unreaped(proc, start + timeout_s, poll_s)
        finally:
            _kill_group(proc.pid)  # also any process the program managed to start
            rc = proc.wait()
        seconds = time.perf_counter() - start
        stdout = _read(tmp_path / "stdout", max_output_bytes)
        stderr = _read(tmp_path / "stderr", max_output_bytes)

    if timed_out or rc in (-signal.SIGXCPU, -signal.SIGKILL):
        reason, error = "timeout", f"time limit exceeded ({timeout_s:g} s)"
    elif BLOCK_MARK in stderr:
        denied = [ln.removeprefix(BLOCK_MARK).strip() for ln in stderr.splitlines() if ln.startswith(BLOCK_MARK)]
        reason, error = "blocked", f"the sandbox denied {', '.join(dict.fromkeys(denied))}"
    elif rc == EXIT_MEMORY:
        reason, error = "memory", f"memory limit exceeded ({memory_mb} MB)"
    elif rc < 0:
        reason, error = "crashed", f"killed by signal {signal.Signals(-rc).name}"
    elif rc != 0:
        reason, error = "error", stderr.strip()[-2000:] or f"exit status {rc}"
    else:
        reason, error = "ok", None
    return SandboxResult(ok=reason == "ok", stdout=stdout, error=error, reason=reason, returncode=rc, seconds=seconds)
