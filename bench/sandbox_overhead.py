"""Per-test cost of the code sandbox, one test at a time: CPU (rac and every process it started,
which includes the sandboxes) and wall time, for each form of test, on a trivial program.

    python bench/sandbox_overhead.py --n 30
"""

from __future__ import annotations

import argparse
import resource
import time

from rac.tasks.code import run_test
from rac.tasks.sandbox import Limits

ADD = "def add(a, b):\n    return a + b\n"
FORMS = {
    "stdin": ("a, b = map(int, input().split())\nprint(a + b)\n", {"input": "1 2\n", "output": "3"}),
    "call": (ADD, {"call": "add(1, 2)", "expected": "3"}),
    "check": (ADD, {"check": "def check(candidate):\n    assert candidate(1, 2) == 3\n",
                    "entry_point": "add"}),
}


def cpu_s() -> float:
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                 resource.getrusage(resource.RUSAGE_CHILDREN)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    a = ap.parse_args()
    print("| form | CPU ms/test | wall ms/test |")
    print("|---|---|---|")
    for form, (program, test) in FORMS.items():
        if run_test(program, test, Limits()) != (True, "pass"):  # also warms caches
            raise SystemExit(f"{form}: the trivial program does not pass")
        c0, w0 = cpu_s(), time.perf_counter()
        for _ in range(a.n):
            run_test(program, test, Limits())
        print(f"| {form} | {1e3 * (cpu_s() - c0) / a.n:.1f} | {1e3 * (time.perf_counter() - w0) / a.n:.1f} |")


if __name__ == "__main__":
    main()
