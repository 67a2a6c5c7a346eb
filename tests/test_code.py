"""Code problems: the sandbox against hostile programs, grading, pass@k, `rac grade`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from rac.cli import main
from rac.tasks.code import extract_code, grade_code, pass_at_k
from rac.tasks.sandbox import Limits, run_python

LIMITS = Limits(wall_s=3, cpu_s=2, memory_mb=256, file_mb=1, processes=8)

HOSTILE = {
    # name: (program, expected status, what must hold afterwards)
    "infinite loop": ("while True: pass", {"killed", "timeout"}),
    "sleeps forever": ("import time\ntime.sleep(1000)", {"timeout"}),
    "fork bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n"
                  "        pass", {"timeout", "killed", "error"}),
    "memory hog": ("x = bytearray(4 * 1024**3)\nprint(len(x))", {"error", "killed"}),
    "huge output": ("while True:\n    print('x' * 10000)", {"output_limit"}),
    "writes outside": ("open(OUTSIDE, 'w').write('pwned')", {"error"}),
    "reads secrets": ("import os\nprint(os.environ.get('RAC_TEST_SECRET', 'none'))", {"ok"}),
    "opens a socket": ("import socket\nsocket.create_connection(('127.0.0.1', PORT), timeout=2)\n"
                       "print('connected')", {"error"}),
}


@pytest.fixture
def listener():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    yield s.getsockname()[1]
    s.close()


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_programs_are_contained(name, tmp_path, listener, monkeypatch):
    monkeypatch.setenv("RAC_TEST_SECRET", "hunter2")
    outside = tmp_path / "pwned.txt"
    program, statuses = HOSTILE[name]
    program = program.replace("OUTSIDE", repr(str(outside))).replace("PORT", str(listener))
    t0 = time.time()
    r = run_python(program, "", LIMITS)
    assert time.time() - t0 < LIMITS.wall_s + 3  # the grader never hangs
    assert r.status in statuses, (r.status, r.stderr[-300:])
    assert not outside.exists()
    assert "hunter2" not in r.stdout
    assert "connected" not in r.stdout
    assert len(r.stdout) <= LIMITS.file_mb * 1024 * 1024


STDIN_TESTS = [{"input": "2 3\n", "output": "5\n"}, {"input": "10 -4\n", "output": "6"}]
GOOD = "</think>\nHere it is:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
WRONG = "</think>\n```python\na, b = map(int, input().split())\nprint(a - b)\n```"
SLOW = "</think>\n```python\nimport time\ntime.sleep(30)\n```"
CRASH = "</think>\n```python\nraise SystemExit(3)\n```"


def test_grading_correct_wrong_slow_and_crashing_solutions():
    assert grade_code(GOOD, STDIN_TESTS, LIMITS).reason == "correct"
    assert grade_code(WRONG, STDIN_TESTS, LIMITS).reason == "wrong_answer"
    assert grade_code(SLOW, STDIN_TESTS, LIMITS).reason == "timeout"
    assert grade_code(CRASH, STDIN_TESTS, LIMITS).reason == "error"
    assert grade_code("```python\nprint(5)\n```", STDIN_TESTS, LIMITS).reason == "no_think_close"
    assert grade_code("</think>\nprint(5)", STDIN_TESTS, LIMITS).reason == "no_code"


def test_functional_tests():
    tests = [{"call": "add(2, 3)", "expected": "5"}, {"call": "add([1], [2])", "expected": "[1, 2]"}]
    good = "</think>\n```python\ndef add(a, b):\n    return a + b\n```"
    bad = "</think>\n```python\ndef add(a, b):\n    return a\n```"
    assert grade_code(good, tests, LIMITS).correct
    assert grade_code(bad, tests, LIMITS).reason == "wrong_answer"


def test_last_code_block_after_think_is_the_answer():
    text = "```python\nprint(1)\n```\n</think>\n```python\nprint(2)\n```\n```\nprint(3)\n```"
    assert extract_code(text) == "print(3)\n"


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(16, 4, 1) == pytest.approx(4 / 16)
    assert pass_at_k(5, 0, 2) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_files_written_to_tmp_and_shm_do_not_outlive_the_program(tmp_path):
    marker = f"rac-hostile-{os.getpid()}-{time.time_ns()}"
    program = (f"for d in ('/tmp', '/dev/shm'):\n    open(d + '/{marker}', 'w').write('x')\n"
               f"print(open('/tmp/{marker}').read())")
    r = run_python(program, "", LIMITS)
    assert r.status == "ok" and r.stdout.strip() == "x", r.stderr[-300:]  # it could write there
    assert not Path(f"/tmp/{marker}").exists() and not Path(f"/dev/shm/{marker}").exists()


@pytest.fixture
def public_dir():
    """A directory every user can read (pytest's tmp_path sits under a private one)."""
    import shutil
    import tempfile

    d = Path(tempfile.mkdtemp(prefix="rac-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_a_program_cannot_read_the_hidden_tests(public_dir, tmp_path, capsys):
    """Reward hacking through the file system: a program that opens the problem file (world
    readable, at a path it can guess) and prints the expected output must be graded wrong."""
    problems = write_jsonl(public_dir / "code.jsonl", [
        {"id": "secret", "problem": "Print the secret.", "tests": [{"input": "", "output": "s3cr3t"}]}])
    os.chmod(problems, 0o644)
    cheat = ("</think>\n```python\nimport json\n"
             f"row = json.loads(open({str(problems)!r}).readline())\n"
             "print(row['tests'][0]['output'])\n```")
    comps = write_jsonl(tmp_path / "c.jsonl", [{"id": "secret", "completion": cheat}])
    assert main(["grade", "--problems", str(problems), "--completions", str(comps), "--out",
                 str(tmp_path / "g")]) == 0
    res = json.loads((tmp_path / "g" / "grade.json").read_text())
    assert res["summary"]["accuracy"] == 0.0
    capsys.readouterr()


def test_the_sandbox_works_for_a_non_root_user(public_dir):
    """The same isolation from an unprivileged caller (user namespaces), with the system Python."""
    import shutil
    import subprocess

    import rac

    setpriv, python = shutil.which("setpriv"), "/usr/bin/python3"
    if os.geteuid() != 0 or not setpriv or not os.access(python, os.X_OK):
        pytest.skip("needs root (to become nobody), setpriv and /usr/bin/python3")
    src = public_dir / "src"
    shutil.copytree(Path(rac.__file__).parent, src / "rac",
                    ignore=shutil.ignore_patterns("embedded", "__pycache__"))
    secret = public_dir / "secret.txt"
    secret.write_text("s3cr3t")
    for p in [public_dir, *public_dir.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    script = ("from rac.tasks.sandbox import Limits, run_python\n"
              f"r = run_python({f'print(open({str(secret)!r}).read())'!r}, '', Limits())\n"
              "print(r.status, 's3cr3t' in r.stdout)\n"
              "r = run_python('import os; print(os.getuid(), sorted(os.listdir(\"/\")))', '', Limits())\n"
              "print(r.status, r.stdout.strip())\n")
    out = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", python, "-c",
                          script], capture_output=True, text=True, cwd=public_dir, timeout=60,
                         env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "HOME": str(public_dir)})
    if "namespaces" in out.stderr:
        pytest.skip("this kernel refuses unprivileged user namespaces: " + out.stderr[-200:])
    lines = out.stdout.splitlines()
    assert out.returncode == 0 and len(lines) == 2, out.stderr[-500:]
    assert lines[0] == "error False"  # the host file is not there at all
    assert lines[1].startswith("ok 65534 ") and "'sandbox'" in lines[1] and "'root'" not in lines[1]


def test_rac_grade_code_and_math_files(tmp_path, capsys):
    code = write_jsonl(tmp_path / "code.jsonl", [
        {"id": "sum", "problem": "Add two numbers.", "tests": STDIN_TESTS},
        {"id": "neg", "problem": "Negate.", "tests": [{"input": "3\n", "output": "-3"}]}])
    comps = write_jsonl(tmp_path / "c.jsonl", [
        {"id": "sum", "completion": GOOD}, {"id": "sum", "completion": WRONG},
        {"id": "neg", "completion": "</think>\n```python\nprint(-int(input()))\n```"},
        {"id": "neg", "completion": SLOW.replace("30", "0.01")}])
    assert main(["grade", "--problems", str(code), "--completions", str(comps), "--out",
                 str(tmp_path / "g")]) == 0
    res = json.loads((tmp_path / "g" / "grade.json").read_text())
    assert res["summary"]["accuracy"] == pytest.approx(0.5)  # (1/2 + 1/2) / 2
    assert res["summary"]["samples_per_problem"] == 2
    math = write_jsonl(tmp_path / "math.jsonl", [{"id": "a", "problem": "1+1", "answer": "2"}])
    mc = write_jsonl(tmp_path / "mc.jsonl", [{"id": "a", "completion": "</think>\\boxed{2}"}])
    assert main(["grade", "--problems", str(math), "--completions", str(mc), "--out",
                 str(tmp_path / "m")]) == 0
    assert json.loads((tmp_path / "m" / "grade.json").read_text())["summary"]["accuracy"] == 1.0
    # completions of a model with no think phase, graded as if it had one, all scored 0 in silence
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"id": "a", "completion": "\\boxed{2}"}])
    capsys.readouterr()
    assert main(["grade", "--problems", str(math), "--completions", str(plain), "--out",
                 str(tmp_path / "p")]) == 2
    assert "closes a think phase" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["grade", "--problems", str(math), "--completions", str(plain), "--thinking", "off",
                 "--out", str(tmp_path / "p")]) == 0
    assert json.loads((tmp_path / "p" / "grade.json").read_text())["summary"]["accuracy"] == 1.0
    capsys.readouterr()


def test_mixed_file_and_bad_completions_are_refused(tmp_path, capsys):
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [
        {"id": "a", "problem": "1+1", "answer": "2"},
        {"id": "b", "problem": "p", "tests": STDIN_TESTS}])
    comps = write_jsonl(tmp_path / "c.jsonl", [{"id": "a", "completion": "x"}])
    assert main(["grade", "--problems", str(mixed), "--completions", str(comps), "--out",
                 str(tmp_path / "o")]) == 2
    assert "mixed.jsonl:2: a code problem in a file of math problems" in capsys.readouterr().err
    math = write_jsonl(tmp_path / "math.jsonl", [{"id": "a", "problem": "1+1", "answer": "2"}])
    for rows, needle in [([{"id": "zz", "completion": "x"}], "does not hold"),
                         ([{"completion": "x"}], ":1: expected a JSON object"),
                         ([], "is empty")]:
        f = write_jsonl(tmp_path / "bad.jsonl", rows)
        assert main(["grade", "--problems", str(math), "--completions", str(f), "--out",
                     str(tmp_path / "o")]) == 2
        assert needle in capsys.readouterr().err
    bad_tests = write_jsonl(tmp_path / "bt.jsonl", [{"id": "a", "problem": "p", "tests": [{"in": 1}]}])
    assert main(["grade", "--problems", str(bad_tests), "--completions", str(comps), "--out",
                 str(tmp_path / "o")]) == 2
    assert "test 0 must be" in capsys.readouterr().err


def test_rac_eval_detects_a_code_file(qwen2_dir, tmp_path, capsys):
    code = write_jsonl(tmp_path / "code.jsonl", [
        {"id": "sum", "problem": "Add two numbers.", "tests": STDIN_TESTS}])
    assert main(["eval", str(qwen2_dir), "--problems", str(code), "--out", str(tmp_path / "e"),
                 "--max-new-tokens", "8", "--samples", "2", "--temperature", "0.7"]) == 0
    res = json.loads((tmp_path / "e" / "eval.json").read_text())
    # a random model writes no code: graded as failures, with the reason recorded
    assert [s["grade"] for s in res["problems"][0]["samples"]] == ["no_think_close"] * 2
    from rac.models import CODE_INSTRUCTION

    # a stdin problem gets the code instruction, not R1's math one
    assert res["instructions"] == {"stdin": {"instruction": CODE_INSTRUCTION, "problems": 1}}
    capsys.readouterr()
