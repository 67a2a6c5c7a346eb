"""``rac recon``: token-wise last-layer error of two pruned models (Figure 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import backend_args, engine, output_args, threads


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recon", help="token-wise last-layer error of two pruned models (Figure 2)")
    p.add_argument("dense", help="the dense model directory, or 'embedded'")
    p.add_argument("model_a", type=Path)
    p.add_argument("model_b", type=Path)
    p.add_argument("--problems", type=Path, required=True, help="held-out problems")
    p.add_argument("--n", type=int, default=20, help="number of problems")
    p.add_argument("--max-new-tokens", type=int, help="rollout length (default: the model's)")
    p.add_argument("--labels", nargs=2, default=["A", "B"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="for the rollouts (transformers backend)")
    p.add_argument("--trust-remote-code", action="store_true")
    backend_args(p)
    output_args(p)
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac.recon import recon

    threads(a.threads)
    res = recon(a.dense, a.model_a, a.model_b, a.problems, a.out, n=a.n,
                max_new_tokens=a.max_new_tokens, labels=tuple(a.labels), engine=engine(a, a.dense),
                overwrite=a.overwrite)
    for lab, v in res["per_model"].items():
        print(f"{lab}: mean error prompt {v['mean_error_prompt']:.4f}, "
              f"decode {v['mean_error_decode']:.4f}")
    print(f"heatmap: {Path(a.out) / 'recon_heatmap.png'}; data: {Path(a.out) / 'recon.json'}")
