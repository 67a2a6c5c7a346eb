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
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="generate only this run's share I of N (0-based; on N machines), every "
                        "batch of it; then 'rac merge-traces' the N stores")
    backend_args(p)
    output_args(p, "trace store directory (resumable)")
    p.set_defaults(func=run)
    m = sub.add_parser("merge-traces", help="one trace store from the N shards of one run")
    m.add_argument("stores", type=Path, nargs="+", help="the shard stores (--shard 0/N .. N-1/N)")
    output_args(m, "the merged trace store")
    m.set_defaults(func=merge)


def _shard(text: str) -> tuple[int, int]:
    """'I/N' as (I, N); make_traces checks that 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r} is not I/N, e.g. 0/2") from e
    return i, n


def merge(a: argparse.Namespace) -> None:
    from rac.calibrate.traces import merge_traces

    done = merge_traces(a.stores, a.out, overwrite=a.overwrite)
    print(f"{done['traces']} traces, {done['tokens']} tokens of {done['budget_tokens']} from "
          f"{len(a.stores)} shards; store: {a.out}")


def run(a: argparse.Namespace) -> None:
    from rac.calibrate.traces import TracesConfig, make_traces

    threads(a.threads)
    cfg = TracesConfig(sampling(a, "trace"), seed=a.seed, samples_per_prompt=a.samples_per_prompt,
                       budget_tokens=a.budget_tokens, batch_size=a.batch_size,
                       only_correct=a.only_correct, instruction=a.instruction,
                       thinking=THINKING[a.thinking])
    done = make_traces(a.model, a.problems, a.out, cfg, engine(a), overwrite=a.overwrite,
                       shard=a.shard)
    note = "" if done["budget_reached"] else " (budget not reached: the problems ran out)"
    if a.shard:
        note = f" (shard {a.shard[0]}/{a.shard[1]}: every batch of it; merge with the others)"
    kept = f", kept {done['kept']} correct" if a.only_correct else ""
    print(f"{done['traces']} traces{kept}, {done['tokens']} tokens of {a.budget_tokens}{note}; "
          f"store: {a.out}")
