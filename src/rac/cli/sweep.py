"""``rac sweep``: run a grid from a TOML config, with caching and resume."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rac.cli.common import report_paths, show


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid from a TOML config, with caching and resume")
    p.add_argument("config", type=Path, help="TOML config (see docs/sweep-example.toml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path,
                   help="stage cache shared with other sweeps of the same model (default: OUT/cache)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.experiments import config, progress
    from rac.experiments.sweep import sweep_and_report

    cfg = config.load(a.config)
    result, rep = sweep_and_report(cfg, a.out, command=" ".join(["rac"] + sys.argv[1:]),
                                   show=show, cache=a.cache)
    print(rep.table1)
    print(f"done in {result['wall_s']:.0f} s: " + progress.stage_breakdown(result["stages"]))
    print(report_paths(a.out, rep.figures))
