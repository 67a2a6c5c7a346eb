"""``rac problems``: write synthetic reasoning problems (JSONL)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    from rac.tasks.generators import TASKS
    from rac.tasks.splits import SPLITS

    p = sub.add_parser("problems", help="write synthetic reasoning problems (JSONL)")
    p.add_argument("--task", default="arith", choices=TASKS, help="built-in task (default: arith)")
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="disjoint by construction (a problem's split is a hash of its skeleton: "
                        "family and numbers or statement parameters, not surface text)")
    p.add_argument("--families", help="comma-separated subset of add,mul,word")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.tasks.generators import generate
    from rac.tasks.problems import write_problems

    families = tuple(a.families.split(",")) if a.families else None
    made = generate(a.task, a.n, a.seed, a.split, families)
    write_problems(a.out, made)
    kinds = ", ".join(sorted({p.extra["family"] for p in made}))
    print(f"wrote {len(made)} {a.split} {a.task} problems ({kinds}) to {a.out}")
