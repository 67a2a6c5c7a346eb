"""Running untrusted programs (model-generated code): the supervisor, on rac's side of the wall.

Each program gets a sandbox of its own, built by the launcher ``rac.tasks.jail`` (a separate,
single-threaded process): new user, mount, network, IPC and PID namespaces; a file system holding
only the system's shared libraries, the interpreter and its standard library (no ``site-packages``,
no virtual environment, nothing of the project), the program's files on a size- and inode-limited
tmpfs at ``/sandbox``, fresh ``/tmp`` and ``/dev/shm``; no network; CPU, memory, file-size,
open-file and process limits that hold per program (the process count is kept per user namespace);
an unprivileged uid (``nobody`` when rac runs as root, else the caller's own) with no capability.
The program is PID 1 of its PID namespace: when it ends, or is killed at the wall-clock limit,
everything it started ends with it, and no signal it sends reaches a process outside.

The program runs ``python -I -S`` (the interpreter rac's virtual environment is based on); its
stdin is a file, its stdout and stderr go to files under a size limit. The grader never hangs or
crashes on what a program does: every outcome is a ``RunResult`` with a reason. When the sandbox
itself cannot be built (a kernel without user namespaces, say), grading stops with one clear error.
What runs where, and the hostile programs this is tested against: docs/code-sandbox.md.
"""

from __future__ import annotations

import marshal
import os
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from rac.io import RacError

NOBODY = 65534
SANDBOX_DIR = "/sandbox"  # where the program's files appear inside its file system
PROGRAM = f"{SANDBOX_DIR}/main.py"
REPORT_FD = 3  # where a harness writes its report, when a run asks for one
JAIL = Path(__file__).with_name("jail.py")
LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32",
                "/usr/libx32")
GRACE_S = 10.0  # how long past its own wall-clock limit the launcher may take to report


@dataclass(frozen=True)
class Limits:
    wall_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 512
    file_mb: int = 16  # any file written, stdout and stderr included; also each tmpfs's size
    processes: int = 16  # per program, the program itself included
    open_files: int = 64
    inodes: int = 256  # files and directories on each of /sandbox, /tmp, /dev/shm


@dataclass(frozen=True)
class RunResult:
    status: str  # "ok", "error" (non-zero exit), "timeout", "killed" (signal), "output_limit"
    returncode: int | None
    stdout: str
    stderr: str
    report: str = ""  # what the program wrote to descriptor REPORT_FD, when the run asked for it

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass(frozen=True)
class Interpreter:
    python: str  # the base interpreter's binary, symlinks resolved
    binds: tuple[str, ...]  # host paths bound read-only, each at its own path
    masks: tuple[str, ...]  # directories inside those hidden under an empty tmpfs


@cache
def interpreter() -> Interpreter:
    """The base Python (not the virtual environment's wrapper) and exactly what it needs: the
    system's library directories, its binary, its shared libpython, its standard library."""
    python = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    own = [python, stdlib]
    if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
        own.append(os.path.realpath(os.path.join(libdir, soname)))
    binds: list[str] = [p for p in LIBRARY_DIRS if os.path.lexists(p)]
    for path in [*own, "/etc/ld.so.cache"]:
        covered = any(path.startswith(b.rstrip("/") + "/") for b in binds if not os.path.islink(b))
        if os.path.exists(path) and not covered:
            binds.append(path)
    masks = [p for p in (os.path.join(stdlib, "site-packages"), "/usr/lib/python3/dist-packages")
             if os.path.isdir(p)]
    return Interpreter(python, tuple(binds), tuple(masks))


def _ids() -> tuple[int, int, list[str], bool]:
    """(uid, gid inside, the uid_map/gid_map lines, whether supplementary groups are cleared)."""
    if os.geteuid() == 0:  # root maps itself (to build the sandbox) and nobody (to run in it)
        return NOBODY, NOBODY, [f"0 0 1\n{NOBODY} {NOBODY} 1\n"] * 2, True
    uid, gid = os.geteuid(), os.getegid()
    return uid, gid, [f"{uid} {uid} 1\n", f"{gid} {gid} 1\n"], False


def _map_user_namespace(pid: int, maps: list[str], root: bool) -> None:
    proc = Path(f"/proc/{pid}")
    if not root:
        (proc / "setgroups").write_text("deny")
    (proc / "uid_map").write_text(maps[0])
    (proc / "gid_map").write_text(maps[1])


class _Status:
    """The launcher's status pipe, read line by line."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buffer = fd, b""

    def line(self, timeout: float) -> str | None:
        """The next line; None if none came within ``timeout`` seconds."""
        while b"\n" not in self.buffer:
            if not select.select([self.fd], [], [], timeout)[0]:
                return None
            chunk = os.read(self.fd, 4096)
            if not chunk:
                return self.buffer.decode() or "error the sandbox launcher ended without a word"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def _refuse(what: str) -> RacError:
    return RacError(f"the code sandbox could not be built ({what}); rac runs generated code only "
                    "inside it, which needs user, mount, network and PID namespaces")


class Sandbox:
    """One program in its sandbox: constructing it starts the program; ``wait`` for its
    ``RunResult`` in the same thread (the launcher dies with the thread that started it)."""

    def __init__(self, argv: list[str], files: dict[str, str], stdin: str, limits: Limits,
                 fds: dict[int, int] | None = None, report: bool = False) -> None:
        """``argv[0] == "python"`` stands for the interpreter; ``files``: path inside -> text;
        ``fds``: descriptor number in the program -> ours (ownership passes to the sandbox);
        ``report``: give the program a file at descriptor ``REPORT_FD``."""
        self.limits, self.base = limits, Path(tempfile.mkdtemp(prefix="rac-sandbox-"))
        self.fds = dict(fds or {})
        self.held = list(self.fds.values())  # our descriptors to close once the launcher has them
        try:
            self._start(argv, files, stdin, report)
        except BaseException:
            self._cleanup()
            raise

    def _write_inputs(self, files: dict[str, str], stdin: str) -> list[list[str]]:
        (self.base / "root").mkdir(mode=0o700)
        (self.base / "stdin").write_text(stdin)
        placed = []
        for i, (inside, text) in enumerate(files.items()):
            host = self.base / f"file{i}"
            host.write_text(text)
            placed.append([inside, str(host)])
        return placed

    def _start(self, argv: list[str], files: dict[str, str], stdin: str, report: bool) -> None:
        interp, (uid, gid, maps, root) = interpreter(), _ids()
        if report:
            self.fds[REPORT_FD] = os.open(self.base / "report", os.O_WRONLY | os.O_CREAT, 0o600)
        status_r, status_w = os.pipe()
        self.status = _Status(status_r)
        go_r, self.go_w = os.pipe()
        self.held += [status_w, go_r] + ([self.fds[REPORT_FD]] if report else [])
        env = {"PATH": os.path.dirname(interp.python), "LANG": "C.UTF-8", "HOME": SANDBOX_DIR,
               "TMPDIR": "/tmp", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0"}
        argv = [interp.python, "-I", "-S", *argv[1:]] if argv[0] == "python" else argv
        config = {"root": str(self.base / "root"), "binds": list(interp.binds),
                  "masks": list(interp.masks),
                  "files": self._write_inputs(files, stdin), "uid": uid, "gid": gid,
                  "setgroups": root, "argv": argv, "env": env, "fds": self.fds,
                  "limits": self._rlimits(root), "status_fd": status_w, "go_fd": go_r}
        (self.base / "config").write_bytes(marshal.dumps(config))
        with open(self.base / "stdin", "rb") as inp, open(self.base / "stdout", "wb") as out, \
                open(self.base / "stderr", "wb") as err:
            self.proc = subprocess.Popen(
                [interp.python, "-I", "-S", "-B", str(JAIL), str(self.base / "config")],
                stdin=inp, stdout=out, stderr=err, env={}, close_fds=True, start_new_session=True,
                pass_fds=(status_w, go_r, *self.fds.values()))
        self._close_held()
        said = self.status.line(GRACE_S)
        if said != "ns":
            raise _refuse((said or "error the launcher did not answer").removeprefix("error "))
        try:
            _map_user_namespace(self.proc.pid, maps, root)
        except OSError as e:
            raise _refuse(f"mapping the user namespace: {e.strerror}") from e
        os.write(self.go_w, b"g")

    def _rlimits(self, root: bool) -> dict:
        """The limits as the launcher applies them. The process count is kept per user namespace
        and uid: unless rac is root, the launcher (same uid) is counted too."""
        return {**self.limits.__dict__, "processes": self.limits.processes + (0 if root else 1)}

    def wait(self) -> RunResult:
        try:
            said = self.status.line(self.limits.wall_s + GRACE_S) or "timeout"
            if said.startswith("error"):
                raise _refuse(said.removeprefix("error "))
            return self._result(said)
        finally:
            self._cleanup()

    def _result(self, said: str) -> RunResult:
        cap = self.limits.file_mb * 1024 * 1024
        out, err = self.base / "stdout", self.base / "stderr"
        with open(out, "rb") as f:
            stdout = f.read(cap).decode("utf-8", "replace")
        with open(err, "rb") as f:
            f.seek(max(0, err.stat().st_size - 4000))
            stderr = f.read().decode("utf-8", "replace")
        report = ""
        if (self.base / "report").exists():
            with open(self.base / "report", "rb") as f:
                report = f.read(cap).decode("utf-8", "replace")
        kind, _, number = said.partition(" ")
        rc = None if kind == "timeout" else int(number) * (-1 if kind == "signal" else 1)
        if kind == "timeout":
            status = "timeout"
        elif rc == -signal.SIGXFSZ or out.stat().st_size >= cap:
            status = "output_limit"
        elif kind == "signal":
            status = "killed"
        else:
            status = "ok" if rc == 0 else "error"
        return RunResult(status, rc, stdout, stderr, report)

    def _close_held(self) -> None:
        while self.held:
            os.close(self.held.pop())

    def _cleanup(self) -> None:
        self._close_held()
        proc = getattr(self, "proc", None)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()  # the program dies with it (its parent-death signal)
            proc.wait()
        for fd in (getattr(self, "go_w", None), getattr(getattr(self, "status", None), "fd", None)):
            if fd is not None:
                os.close(fd)
        shutil.rmtree(self.base, ignore_errors=True)


def run_python(source: str, stdin: str = "", limits: Limits = Limits()) -> RunResult:
    """Run ``source`` as ``/sandbox/main.py`` under ``limits``; never raises for the program's sake."""
    return Sandbox(["python", PROGRAM], {PROGRAM: source}, stdin, limits).wait()
