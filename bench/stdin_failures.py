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
import ast
import json
import re
from collections import Counter
from pathlib import Path

from rac.tasks.problems import answer_form, read_problems

# the fallback for code that does not parse: a quoted prompt with something visible in it
PROMPTED = re.compile(r"(?<![\w.])input\(\s*f?[\"'][^\"']*\S")


def prompts_for_input(code: str) -> bool:
    """Whether the program calls ``input`` with a prompt that prints something: a string constant
    with a visible character, or an f-string; not ``input()``, ``input("")`` or ``input(" ")``
    (whose blank output the grader's normalisation drops), nor text in comments or strings."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return bool(PROMPTED.search(code))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "input" \
                and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr) or (
                    isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.strip()):
                return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--problems", type=Path, required=True, help="the evaluations' problem file")
    ap.add_argument("rows", nargs="+", help="NAME=EVAL_DIR")
    a = ap.parse_args()
    stdin = {p.id for p in read_problems(a.problems) if answer_form(p) == "stdin"}
    if not stdin:
        raise SystemExit(f"{a.problems} has no stdin problems")
    print("| model | stdin samples | correct | wrong answer | error | other | prompted input() | "
          "correct without a prompted input() |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in a.rows:
        name, sep, eval_dir = spec.partition("=")
        path = Path(eval_dir) / "eval.json"
        if not sep or not path.is_file():
            raise SystemExit(f"{spec}: give NAME=EVAL_DIR, the output directory of rac eval")
        problems = {p["id"]: p for p in json.loads(path.read_text())["problems"]}
        if not stdin <= set(problems):
            raise SystemExit(f"{name}: {eval_dir} did not evaluate the stdin problems of {a.problems}")
        samples = [s for i in sorted(stdin) for s in problems[i]["samples"]]
        grades, n = Counter(s["grade"] for s in samples), len(samples)
        share = {g: grades.pop(g, 0) / n for g in ("correct", "wrong_answer", "error")}
        prompted = [prompts_for_input(s.get("extracted") or "") for s in samples]
        rest = [s["correct"] for s, pr in zip(samples, prompted) if not pr]
        print(f"| {name} | {n} | {share['correct']:.3f} | {share['wrong_answer']:.3f} | "
              f"{share['error']:.3f} | {sum(grades.values()) / n:.3f} | {sum(prompted)} "
              f"({sum(prompted) / n:.0%}, {sum(s['correct'] for s, pr in zip(samples, prompted) if pr)} "
              f"correct) | {sum(rest) / max(len(rest), 1):.3f} of {len(rest)} |")

if __name__ == "__main__":
    main()
