"""``rac traces``: generate the dense model's own chains of thought."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import (
    THINKING,
    backend_args,
    engine,
    model_args,
    output_args,
    sampling,
    sampling_args,
    threads,
)


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("traces", help="generate the dense model's own chains of thought")
    model_args(p)
    sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="calibration problems (JSONL)")
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--budget-tokens", type=int, default=1_000_000,
                   help="stop once kept traces hold this many prompt + generated tokens")
    p.add_argument("--only-correct", action="store_true", help="keep only correct traces")
    backend_args(p)
    output_args(p, "trace store directory (resumable)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.calibrate.traces import TracesConfig, make_traces

    threads(a.threads)
    cfg = TracesConfig(sampling(a, "trace"), seed=a.seed, samples_per_prompt=a.samples_per_prompt,
                       budget_tokens=a.budget_tokens, batch_size=a.batch_size,
                       only_correct=a.only_correct, instruction=a.instruction,
                       thinking=THINKING[a.thinking])
    done = make_traces(a.model, a.problems, a.out, cfg, engine(a), overwrite=a.overwrite)
    note = "" if done["budget_reached"] else " (budget not reached: the problems ran out)"
    kept = f", kept {done['kept']} correct" if a.only_correct else ""
    print(f"{done['traces']} traces{kept}, {done['tokens']} tokens of {a.budget_tokens}{note}; "
          f"store: {a.out}")
