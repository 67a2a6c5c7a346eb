"""``rac eval``: evaluate a model on a problem file."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import backend_args, engine, eval_config, model_args, output_args, sampling_args, threads


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a model on a problem file")
    model_args(p)
    sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="JSONL problem file")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (pass@1 over k)")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems")
    backend_args(p)
    output_args(p, "output directory")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.evaluate import evaluate_model, summary_markdown

    threads(a.threads)
    result = evaluate_model(a.model, a.problems, a.out, eval_config(a), engine(a), limit=a.limit,
                            overwrite=a.overwrite)
    print(summary_markdown(result, f"rac eval: {result['model']}"))
    print(f"results: {Path(a.out) / 'eval.json'}, {Path(a.out) / 'eval.md'}")
