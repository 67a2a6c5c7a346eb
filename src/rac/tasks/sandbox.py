"""Running untrusted programs (model-generated code) outside the rac process.

Each program runs in its own subprocess, in a fresh temporary directory, with:

- CPU-time, address-space, file-size and open-file limits (``resource.setrlimit``);
- a process-count limit, made effective by dropping to an unprivileged user when rac runs as
  root (the kernel does not apply RLIMIT_NPROC to root);
- a file system of its own: a private mount namespace whose root is a fresh tmpfs holding only
  what Python needs, read-only (``/usr``, the ``/lib`` directories, the interpreter's
  installation), the program's directory at ``/sandbox``, ``/dev/null`` and friends, and a fresh,
  size-limited ``/tmp`` and ``/dev/shm`` that vanish with it; the host's root is unmounted
  (``pivot_root``), so no other host file (a problem file with its hidden tests, say) is reachable;
- no network: a new network namespace holding only a downed loopback (for a non-root caller both
  namespaces sit in a new user namespace, which the kernel must allow: without it the program is
  not run and grading stops with one clear error);
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
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rac.io import RacError

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = (
    1, 2, 4, 32, 4096, 16384, 1 << 18)
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
NOBODY = 65534
SANDBOX_DIR = "/sandbox"  # where the program's directory appears inside its file system
DEVICES = ("null", "zero", "random", "urandom")


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


_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None
           ) -> None:
    def enc(x: str | None) -> bytes | None:
        return x.encode() if x is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _bind_readonly(source: str, target: str) -> None:
    _mount(source, target, None, MS_BIND | MS_REC)
    _mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _host_paths(python: str) -> list[str]:
    """What the interpreter needs from the host, read-only: the system's libraries and the
    directories of the interpreter's installation (and of its virtual environment)."""
    paths = ["/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin"]
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        paths += [sys.prefix, sys.base_prefix]
    real = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    return [p for p in dict.fromkeys(paths + [real]) if os.path.lexists(p)]


def _make_root(root: str, workdir: str, python: str, limits: Limits) -> None:
    """Build the program's file system on a tmpfs at ``root`` and make it the root."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    _mount("sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in _host_paths(python):
        inside = root + path
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            os.makedirs(os.path.dirname(inside), exist_ok=True)
            if not os.path.lexists(inside):
                os.symlink(os.readlink(path), inside)
            continue
        if os.path.isdir(inside) and os.path.ismount(inside):
            continue  # already inside an earlier bind (a prefix under /usr)
        os.makedirs(inside, exist_ok=True)
        _bind_readonly(path, inside)
    os.makedirs(root + "/dev", exist_ok=True)
    for dev in DEVICES:
        open(f"{root}/dev/{dev}", "w").close()
        _mount(f"/dev/{dev}", f"{root}/dev/{dev}", None, MS_BIND)
    size = f"size={limits.file_mb}m,mode=1777"
    for tmp in ("/tmp", "/dev/shm"):
        os.makedirs(root + tmp, exist_ok=True)
        _mount("sandbox", root + tmp, "tmpfs", MS_NOSUID | MS_NODEV, size)
    os.makedirs(root + SANDBOX_DIR)
    _mount(workdir, root + SANDBOX_DIR, None, MS_BIND)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    # pivot_root(".", "."), then detach the old root: the host's tree is gone, not just hidden
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT[platform.machine()], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir(SANDBOX_DIR)


def _enter_namespaces() -> None:
    """New mount and network namespaces; for a non-root caller inside a new user namespace where
    it keeps its own uid and gid (so it holds no capability after exec)."""
    if os.geteuid() == 0:
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWNET), "unshare")
        return
    uid, gid = os.geteuid(), os.getegid()
    _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET), "unshare")
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _child_setup(limits: Limits, workdir: str, root: str, python: str) -> None:
    """Runs in the child between fork and exec: isolate, then limit, then drop privileges."""
    os.setsid()  # its own process group, so a timeout kills every descendant
    root_user = os.geteuid() == 0
    _enter_namespaces()
    _make_root(root, workdir, python, limits)
    mb = 1024 * 1024
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_mb * mb, limits.memory_mb * mb))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_mb * mb, limits.file_mb * mb))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if root_user:
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
    base = tempfile.mkdtemp(prefix="rac-sandbox-")
    try:
        # base/program: the program's directory (its /sandbox); base/root: where its file
        # system is built; base/stdout, base/stderr: outside its reach
        workdir, root = os.path.join(base, "program"), os.path.join(base, "root")
        os.mkdir(workdir, 0o700)
        os.mkdir(root, 0o700)
        (Path(workdir) / "main.py").write_text(source)
        if os.geteuid() == 0:
            os.chown(workdir, NOBODY, NOBODY)
        out_path, err_path = Path(base) / "stdout", Path(base) / "stderr"
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": SANDBOX_DIR, "TMPDIR": "/tmp",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        python = interpreter()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen(
                    [python, "-I", f"{SANDBOX_DIR}/main.py"], cwd=workdir, env=env,
                    stdin=subprocess.PIPE, stdout=out, stderr=err, close_fds=True,
                    preexec_fn=lambda: _child_setup(limits, workdir, root, python))
            except subprocess.SubprocessError as e:
                raise RacError(f"the code sandbox could not isolate the program ({e}); rac runs "
                               "generated code only inside it, which needs mount and network "
                               "namespaces (and user namespaces when not root)") from e
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
        shutil.rmtree(base, ignore_errors=True)
