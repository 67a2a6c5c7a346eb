"""The sandbox's wall: a launcher process (``python -I -S jail.py CONFIG``, stdlib only) that builds
one program's sandbox and starts the program in it. Started by ``rac.tasks.sandbox``, which reads
what it reports on the status pipe; it never runs untrusted code itself.

The configuration is a ``marshal`` file written by the supervisor (the same interpreter; marshal
loads faster than json, and this process's start-up is on every test's path).

1. ``unshare`` new user, mount, network, IPC and PID namespaces, say ``ns``, and wait until the
   supervisor has written the user namespace's uid/gid maps (only a process outside it may map
   more than its own uid);
2. build the file system on a tmpfs and ``pivot_root`` into it (the host's tree is detached):
   read-only binds of the system's shared libraries and of the interpreter and its standard library
   (its ``site-packages`` covered by an empty tmpfs), ``/dev/{null,zero,random,urandom}``, the
   program's files on a size- and inode-limited tmpfs at ``/sandbox``, fresh limited ``/tmp`` and
   ``/dev/shm``;
3. fork the program: it is PID 1 of the new PID namespace, so when it ends the kernel kills every
   process left in it, and no signal it sends reaches outside; it gets its own session, resource
   limits (``RLIMIT_NPROC`` counts per user namespace, so per program), the unprivileged uid, no
   new privileges, the descriptors asked for and no others, then ``execve``;
4. wait for it, at most the wall-clock limit (then SIGKILL), and say ``exit N``, ``signal N`` or
   ``timeout``. Any failure before the program runs is said as ``error <what>``.
"""

import ctypes
import fcntl
import marshal
import os
import resource
import select
import signal
import sys

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = (
    0x00020000, 0x08000000, 0x10000000, 0x20000000, 0x40000000)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = (
    1, 2, 4, 8, 32, 1024, 2048, 4096)
MS_REC, MS_PRIVATE, MS_RELATIME = 16384, 1 << 18, 1 << 21
ST_RELATIME = 4096
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
DEVICES = ("null", "zero", "random", "urandom")
HIGH_FD = 200  # where the launcher's own descriptors are moved, out of the program's way

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source, target, fstype, flags, data=None):
    def enc(x):
        return x.encode() if x is not None else None

    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {target}")


def _bind_readonly(source: str, target: str) -> None:
    """Bind ``source`` at ``target`` read-only, keeping the flags the source's mount locks (a
    user namespace may add restrictions to a mount, never lift them)."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    kept = os.statvfs(source).f_flag
    flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV
    flags |= kept & (MS_NOEXEC | MS_NOATIME | MS_NODIRATIME)
    flags |= MS_RELATIME if kept & ST_RELATIME else 0
    _mount(None, target, None, flags)


def _tmpfs(target: str, mb: int, inodes: int, mode: str, owner: tuple[int, int] | None = None
           ) -> None:
    os.makedirs(target, exist_ok=True)
    data = f"size={mb}m,nr_inodes={inodes},mode={mode}"
    if owner:
        data += f",uid={owner[0]},gid={owner[1]}"
    _mount("sandbox", target, "tmpfs", MS_NOSUID | MS_NODEV, data)


def _place(root: str, inside: str, source: str, owner: tuple[int, int] | None) -> None:
    target = root + inside
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    if owner:
        os.chown(target, *owner)


def build_root(cfg: dict) -> None:
    """The program's file system, then ``pivot_root`` into it; the host's root is detached."""
    root, lim = cfg["root"], cfg["limits"]
    owner = (cfg["uid"], cfg["gid"])
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates to the host
    _mount("sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,nr_inodes=4096,mode=0755")
    for path in cfg["binds"]:
        if os.path.islink(path):  # merged /usr: /lib -> usr/lib
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink(os.readlink(path), root + path)
        else:
            _bind_readonly(path, root + path)
    for path in cfg["masks"]:
        _mount("sandbox", root + path, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,nr_inodes=2")
    os.makedirs(root + "/dev")
    for dev in DEVICES:  # a plain bind: the device must stay usable (no nodev)
        open(f"{root}/dev/{dev}", "w").close()
        _mount(f"/dev/{dev}", f"{root}/dev/{dev}", None, MS_BIND)
    for tmp in ("/tmp", "/dev/shm"):
        _tmpfs(root + tmp, lim["file_mb"], lim["inodes"], "1777")
    _tmpfs(root + "/sandbox", lim["file_mb"], lim["inodes"], "0755", owner)
    for inside, source in cfg["files"]:
        _place(root, inside, source, owner if inside.startswith("/sandbox/") else None)
    _mount(None, root, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
           "size=4m,nr_inodes=4096,mode=0755")
    os.chdir(root)
    _check(_libc.syscall(SYS_PIVOT_ROOT[os.uname().machine], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "umount the host's root")
    os.chdir("/sandbox")


def _cloexec_high(fd: int) -> int:
    """``fd`` moved out of the program's way, closed on exec."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, HIGH_FD)
    os.close(fd)
    return high


def _limit(lim: dict) -> None:
    mb = 1024 * 1024
    for which, value in ((resource.RLIMIT_CPU, lim["cpu_s"]), (resource.RLIMIT_AS, lim["memory_mb"] * mb),
                         (resource.RLIMIT_FSIZE, lim["file_mb"] * mb), (resource.RLIMIT_CORE, 0),
                         (resource.RLIMIT_NOFILE, lim["open_files"]),
                         (resource.RLIMIT_NPROC, lim["processes"])):
        resource.setrlimit(which, (value, value))


def become_program(cfg: dict, status: int) -> None:
    """In the forked child (PID 1 of the new namespace); never returns."""
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        os.setsid()  # kill(0, ...) reaches only this program's own group
        for target, fd in cfg["fds"].items():
            os.dup2(fd, int(target))  # inheritable; every other descriptor is close-on-exec
        _limit(cfg["limits"])
        if cfg["setgroups"]:
            os.setgroups([])
        os.setresgid(cfg["gid"], cfg["gid"], cfg["gid"])
        os.setresuid(cfg["uid"], cfg["uid"], cfg["uid"])
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except OSError as e:
        os.write(status, f"error starting the program: {e}\n".encode())
    os._exit(127)


def wait_for(pid: int, wall_s: float) -> str:
    """How the program ended; after ``wall_s`` it is killed (and with it its namespace)."""
    pidfd = os.pidfd_open(pid)
    ready, _, _ = select.select([pidfd], [], [], wall_s)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    _, st = os.waitpid(pid, 0)  # returns once every process of the namespace is gone
    if not ready:
        return "timeout"
    return f"signal {os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}"


def main(config_path: str) -> None:
    with open(config_path, "rb") as f:
        cfg = marshal.load(f)
    status, go = _cloexec_high(cfg["status_fd"]), _cloexec_high(cfg["go_fd"])
    cfg["fds"] = {t: _cloexec_high(fd) for t, fd in cfg["fds"].items()}
    try:
        _check(_libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "prctl")
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWPID),
               "unshare")
        os.write(status, b"ns\n")
        if os.read(go, 1) != b"g":
            raise OSError(0, "the supervisor did not map the user namespace")
        build_root(cfg)
        pid = os.fork()
    except OSError as e:
        os.write(status, f"error {e}\n".encode())
        sys.exit(1)
    if pid == 0:
        become_program(cfg, status)
    for fd in cfg["fds"].values():
        os.close(fd)  # the program's pipe ends live only in the program
    os.write(status, (wait_for(pid, cfg["limits"]["wall_s"]) + "\n").encode())


if __name__ == "__main__":
    main(sys.argv[1])
