"""``rac grade``: grade completions made elsewhere (math or code)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import THINKING, output_args, thinking_arg


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("grade", help="grade completions made elsewhere (math or code)")
    p.add_argument("--problems", type=Path, required=True, help="JSONL problem file")
    p.add_argument("--completions", type=Path, required=True,
                   help="JSONL of {id, completion} per sample, or a 'rac eval' eval.json")
    p.add_argument("--tokenizer", help="model directory for token counts (optional)")
    thinking_arg(p)
    output_args(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.evaluate import grade_completions, grade_markdown

    result = grade_completions(a.problems, a.completions, a.out, tokenizer=a.tokenizer,
                               thinking=THINKING[a.thinking], overwrite=a.overwrite)
    print(grade_markdown(result))
    print(f"results: {Path(a.out) / 'grade.json'}, {Path(a.out) / 'grade.md'}")
