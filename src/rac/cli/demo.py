"""``rac demo``: the whole pipeline on the embedded model."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import report_paths, show


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the whole pipeline on the embedded model")
    p.add_argument("--full", action="store_true", help="the reference grid (docs/results)")
    p.add_argument("--out", type=Path, help="default: runs/demo or runs/demo-full")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.experiments import config, demo, progress
    from rac.experiments.sweep import sweep_and_report

    cfg = config.from_dict({**(demo.FULL if a.full else demo.DEMO),
                            **({"threads": a.threads} if a.threads else {})})
    out = a.out or Path("runs") / ("demo-full" if a.full else "demo")
    result, rep = sweep_and_report(cfg, out, command="rac demo" + (" --full" if a.full else ""),
                                   show=show)
    print()
    print(rep.table1)
    for method, comps in rep.comparisons.items():
        first = next((c for c in comps if c.beyond_2se), None)
        print(f"{method}: RAC vs prompt-only first differ by more than 2 SE at "
              + (f"{first.target}." if first else "no sparsity in this grid."))
    print(f"done in {result['wall_s']:.0f} s: " + progress.stage_breakdown(result["stages"]))
    print(report_paths(out, rep.figures))
