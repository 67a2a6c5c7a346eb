"""Code-grading throughput: sandboxed programs per second, tests of a completion run in parallel.

    python bench/grade_throughput.py --tests 64
"""

from __future__ import annotations

import argparse
import os
import time

from rac.tasks.code import grade_code

SOLUTION = "</think>\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tests", type=int, default=64)
    a = ap.parse_args()
    tests = [{"input": f"{i} {i + 1}\n", "output": str(2 * i + 1)} for i in range(a.tests)]
    print(f"{a.tests} stdin/stdout tests of one correct solution, {os.cpu_count()} cores")
    print("| workers | programs/s |")
    print("|---|---|")
    for workers in (1, os.cpu_count() or 1, 2 * (os.cpu_count() or 1)):
        t0 = time.perf_counter()
        g = grade_code(SOLUTION, tests, workers=workers)
        assert g.correct, g
        print(f"| {workers} | {a.tests / (time.perf_counter() - t0):.1f} |")


if __name__ == "__main__":
    main()
