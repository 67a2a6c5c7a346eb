"""``rac toy train``: train the embedded tiny reasoning model from scratch."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("toy", help="the embedded tiny reasoning model")
    toy = p.add_subparsers(dest="toy_verb", required=True, metavar="ACTION")
    t = toy.add_parser("train", help="train the embedded model from scratch")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--work-dir", type=Path, help="checkpoints (default: OUT.work); resumed if present")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="default: 1 (measured fastest); 0: one per core")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=train)


def train(a: argparse.Namespace) -> None:
    from dataclasses import asdict, replace

    from rac.io import check_output_dir
    from rac.toy.train import TrainConfig
    from rac.toy.train import train as train_model

    overrides = {k: getattr(a, k) for k in ("steps", "seed", "threads") if getattr(a, k) is not None}
    cfg = replace(TrainConfig(), **overrides)
    check_output_dir(a.out, a.overwrite)
    work = a.work_dir or a.out.with_name(a.out.name + ".work")
    print("config:", json.dumps(asdict(cfg)))
    info = train_model(cfg, a.out, work, overwrite=a.overwrite)
    print(f"trained {info['parameters']} parameters in {info['train_seconds']:.0f} s "
          f"with {info['threads']} thread(s); saved to {a.out}")
