"""How the stdin programs of finished code evaluations fail: grades, and the samples whose program
asks for its input with a prompt (``input("Enter ...")``), which writes the prompt to standard
output and so can never match the expected output.

    python bench/stdin_failures.py --problems runs/real-qwen05-table2-code/problems/code-test-100.jsonl \\
        dense=runs/code-cache/eval/eb86a64298cdd7d0 RAC=runs/code-cache/eval/6f56b0841b24d177 ...

Each row is NAME=EVAL_DIR (an output of ``rac eval`` or a sweep's eval stage) over the problems
of --problems. Prints a Markdown table; a reporting aid, never a test.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

from rac.tasks.problems import answer_form, read_problems

PROMPTED = re.compile(r"\binput\(\s*[\"']")  # input("...") or input('...'), not input() or input("")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=Path, required=True, help="the evaluations' problem file")
    ap.add_argument("rows", nargs="+", help="NAME=EVAL_DIR")
    a = ap.parse_args()
    stdin = {p.id for p in read_problems(a.problems) if answer_form(p) == "stdin"}
    print("| model | stdin samples | correct | wrong answer | error | prompted input() | "
          "correct without a prompted input() |")
    print("|---|---|---|---|---|---|---|")
    for spec in a.rows:
        name, _, eval_dir = spec.partition("=")
        path = Path(eval_dir) / "eval.json"
        if not path.is_file():
            raise SystemExit(f"{name}: {path} does not exist; give the output directory of rac eval")
        samples = [s for p in json.loads(path.read_text())["problems"] if p["id"] in stdin
                   for s in p["samples"]]
        grades = Counter(s["grade"] for s in samples)
        prompted = [bool(PROMPTED.search(s.get("extracted") or "")) for s in samples]
        rest = [s["correct"] for s, pr in zip(samples, prompted) if not pr]
        n = len(samples)
        print(f"| {name} | {n} | {grades['correct'] / n:.3f} | {grades['wrong_answer'] / n:.3f} | "
              f"{grades['error'] / n:.3f} | {sum(prompted)} ({sum(prompted) / n:.0%}, "
              f"{sum(s['correct'] for s, pr in zip(samples, prompted) if pr)} correct) | "
              f"{sum(rest) / max(len(rest), 1):.3f} of {len(rest)} |")


if __name__ == "__main__":
    main()
