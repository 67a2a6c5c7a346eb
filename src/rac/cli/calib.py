"""``rac calib``: build a calibration set, or describe one (``--inspect``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import THINKING, thinking_arg
from rac.io import RacError


def add(sub: argparse._SubParsersAction) -> None:
    from rac.calibrate.calib import SOURCES

    p = sub.add_parser("calib", help="build a calibration set (generic/prompt/rac/offpolicy)")
    p.add_argument("--source", choices=SOURCES)
    p.add_argument("--tokenizer", help="the target model directory, or 'embedded'")
    p.add_argument("--budget-tokens", type=int, help="exact token budget of the set")
    p.add_argument("--text", nargs="+", help="generic: .txt (blank-line separated), .jsonl "
                   "with 'text', or a datasets directory")
    p.add_argument("--builtin-text", action="store_true",
                   help="generic: rac's built-in synthetic everyday prose (the default for the "
                   "embedded model; a small stand-in for C4 for any other)")
    p.add_argument("--problems", type=Path, help="prompt/reference: calibration problems")
    p.add_argument("--traces", type=Path, help="rac/offpolicy: a trace store")
    p.add_argument("--pack", type=int, default=0, help="pack into windows of LEN (0: natural)")
    p.add_argument("--allow-short", action="store_true", help="accept fewer tokens than budgeted")
    p.add_argument("--instruction", help="as for rac eval")
    thinking_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in generic corpus")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--inspect", type=Path, metavar="DIR", help="describe an existing set")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac import models
    from rac.calibrate import calib

    if a.inspect:
        tok = models.load_tokenizer(a.tokenizer) if a.tokenizer else None
        print(calib.inspect(a.inspect, tok))
        return
    for flag in ("source", "tokenizer", "budget_tokens", "out"):
        if getattr(a, flag) is None:
            raise RacError(f"--{flag.replace('_', '-')} is required (or use --inspect DIR)")
    cfg = calib.CalibConfig(
        a.source, a.budget_tokens, text=[Path(t) for t in a.text or []],
        builtin_text=a.builtin_text, problems=a.problems,
        traces=a.traces, pack=a.pack, allow_short=a.allow_short, instruction=a.instruction,
        seed=a.seed, thinking=THINKING[a.thinking])
    wrote, info = calib.make_calib(a.tokenizer, cfg, a.out, trust_remote_code=a.trust_remote_code,
                                   overwrite=a.overwrite)
    seg = ", ".join(f"{k} {v}" for k, v in info["segment_tokens"].items() if v)
    print(f"{'wrote' if wrote else 'already built:'} {a.source} calibration set, {info['tokens']} "
          f"tokens in {info['rows']} rows ({seg}) at {a.out}")
