"""``rac sweep``: run a grid from a TOML config, with caching and resume."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from rac.cli.common import report_paths, show
from rac.io import RacError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run a grid from a TOML config, with caching and resume")
    p.add_argument("config", type=Path, help="TOML config (see docs/sweep-example.toml)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path,
                   help="stage cache shared with other sweeps of the same model (default: OUT/cache)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                   help="only these of the config's seeds: its first cells sooner (the whole config "
                        "run later reuses every stage they built)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.experiments import config, progress
    from rac.experiments.sweep import sweep_and_report

    cfg = config.load(a.config)
    if a.seeds:
        if extra := sorted(set(a.seeds) - set(cfg.seeds)):
            raise RacError(f"--seeds {' '.join(map(str, extra))}: not among the config's seeds "
                           f"{cfg.seeds}; name some of those or add them to the config")
        cfg = replace(cfg, seeds=[s for s in cfg.seeds if s in a.seeds])
    result, rep = sweep_and_report(cfg, a.out, command=" ".join(["rac"] + sys.argv[1:]),
                                   show=show, cache=a.cache)
    print(rep.table1)
    print(f"done in {result['wall_s']:.0f} s: " + progress.stage_breakdown(result["stages"]))
    print(report_paths(a.out, rep.figures))
