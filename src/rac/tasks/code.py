"""Code grading, LiveCodeBench style: the last fenced Python block after ``</think>``, run against
every test in the sandbox; a problem passes only if every test passes.

Tests are stdin/stdout pairs (``{"input", "output"}``: outputs compared line by line with
trailing whitespace ignored) or functional (``{"call", "expected"}``: a Python expression whose
value must equal the literal ``expected``). Tests of one completion run in parallel across cores.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from math import comb

from rac.tasks.math import Grade, answer_section
from rac.tasks.sandbox import Limits, RunResult, run_python

FENCE = re.compile(r"```(?:python|py|Python)?[ \t]*\n(.*?)```", re.DOTALL)


def extract_code(completion: str, thinking: bool = True) -> str | None:
    section = answer_section(completion, thinking)
    if section is None:
        return None
    blocks = FENCE.findall(section)
    return blocks[-1] if blocks else None


def normalize(output: str) -> list[str]:
    return [ln.rstrip() for ln in output.strip().splitlines()]


def _functional_program(code: str, call: str, expected: str) -> str:
    return (f"{code}\n\n"
            f"__rac_result = ({call})\n"
            f"print('RAC-PASS' if __rac_result == ({expected}) else 'RAC-FAIL ' + repr(__rac_result))\n")


def run_test(code: str, test: dict, limits: Limits) -> tuple[bool, str]:
    """(passed, reason) for one test; reason is 'pass', 'wrong_answer' or the sandbox status."""
    if "call" in test:
        r: RunResult = run_python(_functional_program(code, test["call"], test["expected"]), "",
                                  limits)
        if not r.ok:
            return False, r.status
        return (True, "pass") if r.stdout.strip().endswith("RAC-PASS") else (False, "wrong_answer")
    r = run_python(code, test.get("input", ""), limits)
    if not r.ok:
        return False, r.status
    ok = normalize(r.stdout) == normalize(test["output"])
    return ok, "pass" if ok else "wrong_answer"


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
