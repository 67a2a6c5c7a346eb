"""Code grading, LiveCodeBench and HumanEval style: the last fenced Python block after ``</think>``
is the program, run against every test in a sandbox; a problem passes only if every test passes.

The verdict is reached here, outside every sandbox, and nothing a sandbox holds knows the expected
answer (see docs/code-sandbox.md). Three forms of test:

- stdin/stdout ``{"input", "output"}``: the program runs with ``input`` as stdin and must exit 0;
  its stdout is compared with ``output`` line by line, trailing whitespace ignored;
- functional ``{"call", "expected"}``: ``call`` is a Python expression evaluated, by the harness,
  in the program's namespace; the harness reports the value as plain data, and it must equal the
  literal ``expected``, types included (``True`` is not ``1``, ``1`` is not ``1.0``);
- HumanEval-style ``{"check", "entry_point"}``: ``check`` is Python source defining
  ``check(candidate)`` (and helpers); it runs in a sandbox of its own, where ``candidate`` sends each
  call to the program's sandbox as plain data; the test passes when ``check`` returns.

A program that exits before its harness reports (``exit(0)``, ``os._exit``) has reported nothing:
that is ``no_result``, never a pass. Tests of one completion run in parallel across cores.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from math import comb
from pathlib import Path

from rac.io import RacError
from rac.tasks.inside import plain
from rac.tasks.math import Grade, answer_section
from rac.tasks.sandbox import PROGRAM, Limits, RunResult, Sandbox, run_python

FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)
INSIDE = Path(plain.__file__).parent


def extract_code(completion: str, thinking: bool = True) -> str | None:
    section = answer_section(completion, thinking)
    if section is None:
        return None
    blocks = FENCE.findall(section)
    return blocks[-1] if blocks else None


def normalize(output: str) -> list[str]:
    return [ln.rstrip() for ln in output.strip().splitlines()]


@cache
def _harness(*names: str) -> dict[str, str]:
    """Files of ``rac.tasks.inside`` as they are copied into a sandbox, at /harness."""
    return {f"/harness/{n}": (INSIDE / n).read_text() for n in ("plain.py", *names)}


def _report(r: RunResult) -> dict | None:
    """The harness's one-line report, or None if there is none (or it is not one JSON object)."""
    lines = r.report.splitlines()
    try:
        report = json.loads(lines[0]) if len(lines) == 1 else None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than json's C stack
        return None
    return report if isinstance(report, dict) and len(report) == 1 else None


def _expected(test: dict) -> object:
    try:
        return plain.literal(test["expected"])
    except ValueError as e:
        raise RacError(f"a functional test's 'expected' must be a Python literal: {e}") from None


def _stdin_test(code: str, test: dict, limits: Limits) -> str:
    r = run_python(code, test.get("input", ""), limits)
    if not r.ok:
        return r.status
    return "pass" if normalize(r.stdout) == normalize(test["output"]) else "wrong_answer"


def _call_test(code: str, test: dict, limits: Limits) -> str:
    expected = _expected(test)
    r = Sandbox(["python", "/harness/harness.py", "call"], {PROGRAM: code, **_harness("harness.py")},
                test["call"], limits, report=True).wait()
    report = _report(r)
    if not r.ok:
        return r.status
    if report is None:
        return "no_result" if not r.report else "bad_report"
    if "raised" in report:
        return "error"
    try:
        same = "value" in report and plain.canonical(plain.untree(report["value"])) == \
            plain.canonical(expected)
    except (ValueError, plain.NotPlain):
        same = False
    return "pass" if same else "wrong_answer"


def _check_test(code: str, test: dict, limits: Limits) -> str:
    """The check in one sandbox, the program in another, joined by two pipes of plain data."""
    calls_r, calls_w = os.pipe()
    replies_r, replies_w = os.pipe()
    try:
        program = Sandbox(["python", "/harness/harness.py", "serve", test["entry_point"]],
                          {PROGRAM: code, **_harness("harness.py")}, "", limits,
                          fds={3: calls_r, 4: replies_w})
    except BaseException:
        os.close(calls_w)
        os.close(replies_r)
        raise
    try:
        checked = Sandbox(["python", "/harness/checker.py"], _harness("checker.py"),
                          json.dumps({"check": test["check"], "entry_point": test["entry_point"]}),
                          limits,
                          fds={4: calls_w, 5: replies_r}, report=True).wait()
    finally:
        served = program.wait()
    report = _report(checked)
    if not checked.ok or report is None:
        return checked.status if not checked.ok else "no_result"
    if "passed" in report:
        return "pass"
    if "ended" in report:
        return served.status if not served.ok else "no_result"
    if "unsupported" in report:
        return "unsupported_test"
    return "wrong_answer" if report.get("failed") == "AssertionError" else "error"


def run_test(code: str, test: dict, limits: Limits) -> tuple[bool, str]:
    """(passed, reason) for one test; reason is 'pass', 'wrong_answer', 'error', 'no_result' (the
    program ended before reporting), 'bad_report', 'unsupported_test' or the sandbox status."""
    if "check" in test:
        reason = _check_test(code, test, limits)
    elif "call" in test:
        reason = _call_test(code, test, limits)
    else:
        reason = _stdin_test(code, test, limits)
    return reason == "pass", reason


def grade_code(completion: str, tests: list[dict], limits: Limits | None = None,
               workers: int | None = None, thinking: bool = True) -> Grade:
    limits = limits or Limits()
    if answer_section(completion, thinking) is None:
        return Grade(False, None, "no_think_close")
    code = extract_code(completion, thinking)
    if code is None:
        return Grade(False, None, "no_code")
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(pool.map(lambda t: run_test(code, t, limits), tests))
    failed = [reason for ok, reason in results if not ok]
    return Grade(not failed, code, failed[0] if failed else "correct")


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of pass@k from n samples of which c passed (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)
