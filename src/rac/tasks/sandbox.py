"""Running untrusted programs (model-generated code) outside the rac process.

Each program runs in its own subprocess, in a fresh temporary directory, with:

- CPU-time, address-space, file-size and open-file limits (``resource.setrlimit``);
- a process-count limit, made effective by dropping to an unprivileged user when rac runs as
  root (the kernel does not apply RLIMIT_NPROC to root);
- no network where the OS allows it: a new network namespace (``unshare(CLONE_NEWNET)``, with a
  user namespace when not root), holding only a downed loopback;
- a minimal environment (no secrets from the parent), ``python -I`` (isolated mode);
- a wall-clock limit, after which its whole process group is killed;
- stdout and stderr written to files under a size limit, so a flood of output cannot fill memory.

The grader never hangs or crashes on what a program does: every outcome is a ``RunResult`` with a
reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
NOBODY = 65534


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    file_mb: int = 16  # any file written, stdout and stderr included
    processes: int = 16
    open_files: int = 64


@dataclass(frozen=True)
class RunResult:
    status: str  # "ok", "error" (non-zero exit), "timeout", "killed" (signal), "output_limit"
    returncode: int | None
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def _unshare(flags: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.unshare(flags) == 0
    except (OSError, AttributeError):
        return False


def _child_setup(limits: Limits, workdir: str) -> None:
    """Runs in the child between fork and exec: isolate, then limit, then drop privileges."""
    os.setsid()  # its own process group, so a timeout kills every descendant
    root = os.geteuid() == 0
    if root:
        _unshare(CLONE_NEWNET)
    elif not _unshare(CLONE_NEWUSER | CLONE_NEWNET):
        pass  # no namespaces for unprivileged users here: the other limits still hold
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if root:
        os.chown(workdir, NOBODY, NOBODY)
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))


def _world_executable(path: str) -> bool:
    """Can an unprivileged user execute ``path`` (every directory on the way searchable)?"""
    real = Path(os.path.realpath(path))
    if not real.exists() or not os.stat(real).st_mode & 0o001:
        return False
    return all(os.stat(d).st_mode & 0o001 for d in real.parents)


def interpreter() -> str:
    """The Python that runs untrusted code: ours, unless rac runs as root from a directory an
    unprivileged user cannot reach (e.g. /root/.pyenv), then the system's."""
    if os.geteuid() != 0 or _world_executable(sys.executable):
        return sys.executable
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if _world_executable(candidate):
            return candidate
    raise RuntimeError("no Python interpreter that an unprivileged user can run was found")


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def run_python(source: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
    """Run ``source`` with ``python -I`` under ``limits``; never raises for the program's sake."""
    workdir = tempfile.mkdtemp(prefix="rac-sandbox-")
    try:
        os.chmod(workdir, 0o700)
        prog = Path(workdir) / "main.py"
        prog.write_text(source)
        out_path, err_path = Path(workdir) / "stdout", Path(workdir) / "stderr"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir,
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen(
                [interpreter(), "-I", str(prog)], cwd=workdir, env=env, stdin=subprocess.PIPE,
                stdout=out, stderr=err, preexec_fn=lambda: _child_setup(limits, workdir),
                close_fds=True)
            status = None
            try:
                proc.communicate(stdin.encode(), timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                status = "timeout"
            except (BrokenPipeError, OSError):
                proc.wait(timeout=limits.wall_s)
            finally:
                _kill_group(proc)  # leftover children, whatever happened
                proc.wait()
        cap = limits.file_mb * 1024 * 1024
        stdout = out_path.read_bytes()[:cap].decode("utf-8", "replace")
        stderr = err_path.read_bytes()[-4000:].decode("utf-8", "replace")
        rc = proc.returncode
        if status is None:
            if rc == -signal.SIGXFSZ or out_path.stat().st_size >= cap:
                status = "output_limit"
            elif rc is not None and rc < 0:
                status = "killed"
            elif rc != 0:
                status = "error"
            else:
                status = "ok"
        return RunResult(status, rc, stdout, stderr)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
