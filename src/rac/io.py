"""Small file helpers shared by every stage: nothing half-written ever appears under its final name."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class RacError(Exception):
    """A problem the user can fix; the CLI prints it as one line and exits non-zero."""


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_figure(fig, path: Path, dpi: int = 120) -> None:
    """Save a matplotlib figure through a temporary file, then close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=dpi)
    os.replace(tmp, path)
    plt.close(fig)


def check_output_dir(path: Path, overwrite: bool) -> None:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RacError(f"{path} is a file, not a directory; choose another output path")
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise RacError(f"{path} already exists and is not empty; pass --overwrite or choose another")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())


def _tmp_prefix(path: Path) -> str:
    """``.NAME.HOST-PID.``: whose temporary sibling it is, so that only its writer's death frees it."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def _remove_orphans(path: Path) -> None:
    """Temporary siblings of ``path`` left by a run that was killed (SIGKILL leaves no chance to
    clean up). Only those of a dead process on this host: a pid says nothing about another host's
    processes (a cache shared over NFS), and the exact pattern keeps other files' siblings
    (``NAME.3``'s, say) out. The random part is mkstemp's 8 characters."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{re.escape(_host())}-(\d{{1,9}})"
                         r"\.[a-z0-9_]{8}\.tmp")
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        m = pattern.fullmatch(tmp.name)
        if m and not _alive(int(m.group(1))):
            if tmp.is_dir():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_dir(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces ``path`` in one rename.

    On any failure (including Ctrl-C) the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    check_output_dir(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=".tmp"))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; outputs are ordinary dirs
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
