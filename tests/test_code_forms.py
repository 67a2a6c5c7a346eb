"""The three forms of code test and the plain data that crosses the sandbox's wall: values compare
with their types, the HumanEval-style check form runs apart from the program, problem files with a
test that cannot run are refused in one line."""

from __future__ import annotations

import json

import pytest

from rac.io import RacError
from rac.tasks.code import grade_code
from rac.tasks.inside import plain
from rac.tasks.problems import read_problems
from rac.tasks.sandbox import Limits, run_python

LIMITS = Limits(wall_s=5, cpu_s=3, memory_mb=256, file_mb=1, processes=8)


def grade(program: str, tests: list[dict]) -> str:
    return grade_code(f"</think>\n```python\n{program}```", tests, LIMITS).reason


@pytest.mark.parametrize("a,b,same", [
    (1, 1, True), (True, 1, False), (1, 1.0, False), (0.0, -0.0, True), ([1, 2], (1, 2), False),
    ({1, 2, 3}, {3, 2, 1}, True), ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True), ({1: "x"}, {1.0: "x"}, False),
    (b"ab", "ab", False), ([[1, (2, {3})]], [[1, (2, {3})]], True), (None, 0, False)])
def test_plain_values_are_the_same_only_with_the_same_types(a, b, same):
    assert (plain.canonical(a) == plain.canonical(b)) is same


def test_plain_data_round_trips_and_nothing_else_does():
    value = [None, True, -3, 2.5, float("inf"), "é\n\ud800😀\"", b"\x00\xff", (1, [2]), {3, 4}, {"k": (5,)},
             1 + 2j, [], ()]
    assert plain.decode(plain.encode(value)) == value
    assert type(plain.decode(plain.encode((1,)))) is tuple

    class Int(int):
        pass

    for bad in (Int(3), lambda: 0, frozenset(), object(), _nested(101), 10 ** 5000):
        with pytest.raises(plain.NotPlain):
            plain.encode(bad)
    for text in ('{"x": 1}', '{"t": 1}', '{"d": [[[], 1]]}', '{"a": 1, "b": 2}', "[" * 5000 + "]" * 5000):
        with pytest.raises(ValueError):
            plain.decode(text)


def _nested(depth: int) -> list:
    v: list = []
    for _ in range(depth):
        v = [v]
    return v


def test_expected_must_be_a_literal_of_plain_data():
    assert plain.literal("[1, (2, 'x'), {3}]") == [1, (2, "x"), {3}]
    for text in ("float('inf')", "...", "frozenset()", "add(1)", "[1,"):
        with pytest.raises(ValueError, match="not a Python literal of plain data"):
            plain.literal(text)


def test_functional_results_compare_with_their_types():
    program = ("def f(x):\n"
               "    return {'list': [1, 2], 'tuple': (1, 2), 'set': {2, 1}, 'dict': {'b': 1, 'a': 2}}[x]\n")
    tests = [{"call": "f('list')", "expected": "[1, 2]"}, {"call": "f('set')", "expected": "{1, 2}"},
             {"call": "f('dict')", "expected": "{'a': 2, 'b': 1}"}]
    assert grade(program, tests) == "correct"
    assert grade(program, [{"call": "f('tuple')", "expected": "[1, 2]"}]) == "wrong_answer"
    assert grade("def f(x):\n    return iter([1])\n", [{"call": "f(0)", "expected": "[1]"}]) == "wrong_answer"
    assert grade("def f(x):\n    raise ValueError\n", [{"call": "f(0)", "expected": "1"}]) == "error"


CHECK = ("EPS = 1e-9\n\n"
         "def near(a, b):\n    return abs(a - b) < EPS\n\n"
         "def check(candidate):\n"
         "    assert candidate([1, 2, 3]) == 2\n"
         "    assert near(mean([0.1, 0.2]), 0.15)\n"  # the entry point by its own name
         "    assert candidate(values=[5]) == 5\n"
         "    try:\n        candidate([])\n    except ValueError:\n        pass\n"
         "    else:\n        raise AssertionError('an empty list must raise ValueError')\n")
MEAN = ("def mean(values):\n    if not values:\n        raise ValueError('empty')\n"
        "    return sum(values) / len(values)\n")


def test_a_humaneval_check_passes_a_right_program_and_fails_wrong_ones():
    tests = [{"check": CHECK, "entry_point": "mean"}]
    assert grade(MEAN, tests) == "correct"
    assert grade(MEAN.replace("/ len(values)", "// len(values)"), tests) == "wrong_answer"
    assert grade(MEAN.replace("raise ValueError('empty')", "return 0"), tests) == "wrong_answer"
    assert grade(MEAN.replace("mean", "average"), tests) == "error"  # no such function
    assert grade("import time\ndef mean(values):\n    time.sleep(60)\n", tests) == "timeout"


def test_a_check_that_swallows_every_exception_does_not_pass_a_dead_program():
    swallow = ("def check(candidate):\n    try:\n        candidate(1)\n    except BaseException:\n"
               "        pass\n")
    tests = [{"check": swallow, "entry_point": "f"}]
    assert grade("def f(x):\n    return x\n", tests) == "correct"
    assert grade("import os\ndef f(x):\n    os._exit(0)\n", tests) == "no_result"
    assert grade("import os\ndef f(x):\n    os._exit(3)\n", tests) == "error"


def test_a_check_passing_something_that_is_not_plain_data_is_reported_as_such():
    tests = [{"check": "def check(candidate):\n    assert candidate(lambda: 1) == 1\n", "entry_point": "f"}]
    assert grade("def f(g):\n    return g()\n", tests) == "unsupported_test"


def test_the_standard_library_works_in_the_sandbox():
    program = ("import hashlib, sqlite3, subprocess, sys, threading, zlib\n"
               "print(hashlib.sha256(b'x').hexdigest()[:8], zlib.crc32(b'x'))\n"
               "print(sqlite3.connect(':memory:').execute('select 6 * 7').fetchone()[0])\n"
               "print(subprocess.run([sys.executable, '-c', 'print(1)'], capture_output=True,\n"
               "                     stdin=subprocess.DEVNULL).stdout.decode().strip())\n"
               "t = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()\n")
    r = run_python(program, "", LIMITS)
    assert (r.status, r.stdout) == ("ok", "2d711642 2363233923\n42\n1\nthread\n"), r.stderr[-300:]


@pytest.mark.parametrize("test,message", [
    ({"call": "f(1)", "expected": "float('nan')"}, "test 0: \"float('nan')\" is not a Python literal"),
    ({"call": "f(", "expected": "1"}, "test 0: '(' was never closed"),
    ({"check": "x = 1", "entry_point": "f"}, "test 0: 'check' must define check(candidate)"),
    ({"check": "def check(c):\n    pass\n", "entry_point": "not a name"}, "'entry_point' be a function"),
    ({"check": "def check(c) pass", "entry_point": "f"}, "test 0: "),
    ({"call": "f(1)"}, "test 0 must be {'input', 'output'}, {'call', 'expected'} or {'check', 'entry_")])
def test_a_problem_file_with_a_test_that_cannot_run_is_refused(tmp_path, test, message):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"id": "a", "problem": "p", "tests": [test]}) + "\n")
    with pytest.raises(RacError, match=r"p\.jsonl:1: ") as e:
        read_problems(path)
    assert message in str(e.value)
