"""The hostile set of docs/code-sandbox.md: programs that tried to be graded correct without solving
the problem, to outlive or kill the grader, to starve each other of processes, or to read what the
sandbox must not hold. Each entry here failed on a372ae1 (graded correct, grader killed, leftover
running, secret read) and is contained now."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import rac
from rac.tasks.code import grade_code
from rac.tasks.sandbox import Limits, run_python

LIMITS = Limits(wall_s=5, cpu_s=3, memory_mb=256, file_mb=1, processes=12)
# Walking every file takes 0.4-2 s alone and passed 5 s while the rest of the suite ran (graded
# 'timeout', not the 'wrong_answer' asserted): the walks get time enough to finish their search.
WALK_LIMITS = dataclasses.replace(LIMITS, wall_s=60, cpu_s=40)
ADD = [{"call": "add(2, 3)", "expected": "5"}, {"call": "add(-4, 4)", "expected": "0"}]
MARK = "zq7731"  # an expected value no program can compute from the call
SECRET_CALL = [{"call": "add(1, 1)", "expected": repr(MARK)}]
CHECK = [{"check": "def check(candidate):\n    assert candidate(2, 3) == 5\n"
                   f"    assert candidate('{MARK}', '') == '{MARK}'\n", "entry_point": "add"}]
SETPRIV = shutil.which("setpriv")
SEARCH = (  # add(a, b) sets `found` if a file outside the libraries holds MARK (its source does not)
    "import os\n"
    "def add(a, b):\n"
    "    found, mark = None, 'zq' + '7731'\n"
    "    for d, _, names in os.walk('/'):\n"
    "        for n in names if not any(p in d for p in ('/dev', '/lib', '/usr')) else ():\n"
    "            try:\n"
    "                with open(os.path.join(d, n), errors='ignore') as f:\n"
    "                    found = found or (mark if mark in f.read(1 << 20) else None)\n"
    "            except OSError:\n"
    "                pass\n")

CHEATS = {
    # name: (program, tests, the reason it is graded with now)
    "marker then SystemExit": ("print('RAC-PASS')\nraise SystemExit\n", ADD, "no_result"),
    "__eq__ always True": ("class Any:\n    def __eq__(self, other):\n        return True\n"
                           "def add(a, b):\n    return Any()\n", ADD, "wrong_answer"),
    "reads the expected literal from its own file": (
        "import re\n"
        "def add(a, b):\n"
        "    m = re.search(r'== \\((.*?)\\) else', open('/sandbox/main.py').read())\n"
        "    return eval(m.group(1)) if m else None\n", ADD, "wrong_answer"),
    "searches every file for the expected value": (SEARCH + "    return found\n", SECRET_CALL,
                                                   "wrong_answer"),
    "True for 1": ("def add(a, b):\n    return True\n", [{"call": "add(0, 1)", "expected": "1"}],
                   "wrong_answer"),
    "1.0 for 1": ("def add(a, b):\n    return 1.0\n", [{"call": "add(0, 1)", "expected": "1"}],
                  "wrong_answer"),
    "check form: exit(0) before the check": ("import sys\nsys.exit(0)\n", CHECK, "no_result"),
    "check form: os._exit(0) in the call": ("import os\ndef add(a, b):\n    os._exit(0)\n", CHECK,
                                            "no_result"),
    "check form: __eq__ always True": ("class Any:\n    def __eq__(self, other):\n        return True\n"
                                       "def add(a, b):\n    return Any()\n", CHECK, "error"),
    "check form: forges a pass on every descriptor": (
        "import os\nfor fd in range(64):\n    try:\n"
        "        os.write(fd, b'{\"passed\": true}\\n{\"value\": 5}\\n')\n    except OSError:\n"
        "        pass\ndef add(a, b):\n    return None\n", CHECK, "error"),
    "check form: StopIteration ends the check's map early": (
        "def add(a, b):\n    raise StopIteration\n",
        [{"check": "def check(candidate):\n"
                   "    assert all(map(lambda ab: candidate(*ab) == sum(ab), [(2, 3), (1, 1)]))\n",
          "entry_point": "add"}], "error"),
    "check form: searches every file for the check's values": (
        SEARCH + "    return a + b if found else None\n", CHECK, "wrong_answer"),
}


@pytest.mark.parametrize("name", CHEATS)
def test_a_program_that_does_not_solve_is_not_graded_correct(name):
    program, tests, reason = CHEATS[name]
    limits = WALK_LIMITS if program.startswith(SEARCH) else LIMITS
    g = grade_code(f"</think>\n```python\n{program}```", tests, limits)
    assert (g.correct, g.reason) == (False, reason)


def test_a_report_nested_too_deep_for_json_is_a_bad_report_not_a_grader_crash():
    """json.loads raises RecursionError (not ValueError) on 200,000 nested brackets: the grader
    used to die with a traceback, ending the whole evaluation."""
    program = ("import os\n"
               "os.write(3, b'{\"value\":' + b'[' * 200000 + b']' * 200000 + b'}\\n')\n"
               "os._exit(0)\n")
    g = grade_code(f"</think>\n```python\n{program}```", ADD[:1], LIMITS)
    assert (g.correct, g.reason) == (False, "bad_report")


def _processes_with(marker: str) -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and marker.encode() in (d / "cmdline").read_bytes():
                found.append(int(d.name))
        except OSError:
            pass
    return found


def test_a_double_forked_setsid_leftover_does_not_outlive_the_run():
    marker = f"rac-leftover-{os.getpid()}-{time.time_ns()}"
    program = ("import os, sys, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
               "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(8)', "
               f"{marker!r}])\n    os._exit(0)\ntime.sleep(0.5)\nprint('done')\n")
    r = run_python(program, "", LIMITS)
    assert (r.status, r.stdout) == ("ok", "done\n")
    assert _processes_with(marker) == []


def test_no_process_survives_a_fork_bomb():
    marker = f"rac-bomb-{os.getpid()}-{time.time_ns()}"
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    program = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {marker!r}])\n"
    assert run_python(program, "", LIMITS).status in {"timeout", "killed", "error"}
    assert _processes_with(marker) == []


@pytest.fixture
def bystander():
    """An unrelated process of user nobody, the uid programs run as when rac is root."""
    if os.geteuid() != 0 or not SETPRIV:
        pytest.skip("needs root and setpriv")
    proc = subprocess.Popen([SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", "sleep", "30"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("program", [
    "import os\nos.kill(-1, 9)\n",  # at once
    "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"  # a leftover, later
    "        time.sleep(0.5)\n        os.kill(-1, 9)\n    os._exit(0)\n"])
def test_a_program_cannot_kill_an_unrelated_process_of_its_uid(bystander, program):
    time.sleep(0.2)  # the bystander runs as nobody now
    run_python(program, "", LIMITS)
    time.sleep(1.0)
    assert bystander.poll() is None


FORKS = ("import os, time\npids = []\nfor _ in range(WANT):\n    try:\n        pid = os.fork()\n"
         "    except OSError:\n        break\n    if pid == 0:\n        time.sleep(1.5)\n"
         "        os._exit(0)\n    pids.append(pid)\nprint(len(pids))\n"
         "for p in pids:\n    os.waitpid(p, 0)\n")
CONCURRENT_FORKS = (  # four programs at once asking for 10 children each, then one asking for 20
    "from concurrent.futures import ThreadPoolExecutor\nfrom rac.tasks.sandbox import Limits, run_python\n"
    f"program, limits = {FORKS!r}, Limits(wall_s=5, processes=12)\n"
    "def forks(n):\n    return run_python(program.replace('WANT', str(n)), '', limits).stdout.strip()\n"
    "with ThreadPoolExecutor(4) as pool:\n    print(*pool.map(forks, [10] * 4), forks(20))\n")


def test_concurrent_programs_each_get_their_own_process_limit():
    # the limit holds too: 12 processes are the program itself and 11 children
    assert subprocess.run([sys.executable, "-c", CONCURRENT_FORKS], capture_output=True, text=True,
                          timeout=60).stdout == "10 10 10 10 11\n"


@pytest.mark.parametrize("where", ["/sandbox", "/tmp"])
def test_the_sandbox_file_systems_are_size_and_inode_limited(where):
    limits = Limits(wall_s=5, cpu_s=3, file_mb=1)  # and 256 inodes
    many = (f"n = 0\ntry:\n    for i in range(1000):\n        open(f'{where}/f{{i}}', 'w').close()\n"
            "        n += 1\nexcept OSError as e:\n    print('stopped', n < 256, e.errno)\n")
    assert run_python(many, "", limits).stdout == "stopped True 28\n"  # ENOSPC
    big = (f"n = 0\ntry:\n    for i in range(100):\n"
           f"        open(f'{where}/big{{i}}', 'wb').write(b'x' * 2**19)\n        n += 1\n"
           "except OSError as e:\n    print('stopped', n, e.errno)\n")
    assert run_python(big, "", limits).stdout == "stopped 2 28\n"  # 1 MB


@pytest.fixture
def rac_copy():
    """rac's sources in a directory every user can read (pytest's tmp_path is private), for
    running the grader as another user or from another Python."""
    d = Path(tempfile.mkdtemp(prefix="rac-test-", dir="/var/tmp" if os.path.isdir("/var/tmp") else None))
    shutil.copytree(Path(rac.__file__).parent, d / "src" / "rac",
                    ignore=shutil.ignore_patterns("embedded", "__pycache__"))
    for p in [d, *d.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _grader(python: str, script: str, src: Path, user: bool = False) -> subprocess.CompletedProcess:
    cmd = [python, "-c", script]
    if user:
        cmd = [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=src.parent,
                          env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})


def test_a_program_cannot_kill_a_non_root_grader(rac_copy):
    if os.geteuid() != 0 or not SETPRIV or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and /usr/bin/python3")
    script = ("from rac.tasks.sandbox import Limits, run_python\n"
              "for p in ('import os; os.kill(os.getppid(), 9)', 'import os; os.kill(-1, 9)'):\n"
              "    run_python(p, '', Limits(wall_s=5))\n    print('survived')\n")
    out = _grader("/usr/bin/python3", script, rac_copy / "src", user=True)
    assert (out.returncode, out.stdout) == (0, "survived\nsurvived\n"), out.stderr[-500:]


def test_a_non_root_grader_gives_each_program_its_own_process_limit(rac_copy):
    if os.geteuid() != 0 or not SETPRIV or not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and /usr/bin/python3")
    out = _grader("/usr/bin/python3", CONCURRENT_FORKS, rac_copy / "src", user=True)
    assert out.stdout == "10 10 10 10 11\n", out.stderr[-500:]


def _venv(where: Path) -> str:
    if not os.access("/usr/bin/python3", os.X_OK):
        pytest.skip("needs /usr/bin/python3")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", str(where)], check=True)
    where.chmod(0o755)
    return str(where / "bin" / "python")


def test_nothing_of_a_venv_inside_the_project_is_visible(rac_copy):
    python = _venv(rac_copy / ".venv")
    (rac_copy / ".venv" / "hidden.jsonl").write_text(MARK)
    (rac_copy / ".venv" / "hidden.jsonl").chmod(0o644)
    venv = rac_copy / ".venv"
    program = (f"import os\nprint(os.path.exists({str(rac_copy)!r}), os.path.exists({str(venv)!r}))\n"
               f"print(open({str(venv / 'hidden.jsonl')!r}).read())\n")
    script = ("from rac.tasks.sandbox import run_python\n"
              f"r = run_python({program!r})\n"
              f"print(r.status, r.stdout.splitlines()[:1], {MARK!r} in r.stdout)\n")
    out = _grader(python, script, rac_copy / "src")
    assert out.stdout == "error ['False False'] False\n", out.stderr[-500:]


def test_a_venv_under_tmp_still_runs_programs(rac_copy):
    where = Path(tempfile.mkdtemp(prefix="rac-venv-", dir="/tmp"))
    try:
        python = _venv(where / "venv")
        where.chmod(0o755)
        script = ("from rac.tasks.sandbox import run_python\n"
                  "r = run_python('print(6 * 7)')\nprint(r.status, r.stdout.strip())\n")
        out = _grader(python, script, rac_copy / "src")
        assert out.stdout == "ok 42\n", out.stderr[-500:]
    finally:
        shutil.rmtree(where, ignore_errors=True)
