"""``rac search``: the largest sparsity (or fewest bits) within a tolerance of dense accuracy."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import eval_config, model_args, recipe_arg, sampling_args, show, threads
from rac.cli.quantize import quant_args, quant_config


def add(sub: argparse._SubParsersAction) -> None:
    from rac.prune.config import METHODS

    p = sub.add_parser("search", help="the largest sparsity (or fewest weight bits) within a "
                       "tolerance of dense accuracy")
    model_args(p)
    sampling_args(p)
    p.add_argument("--calib", type=Path, required=True, help="calibration set from 'rac calib'")
    p.add_argument("--problems", type=Path, required=True, help="validation problems (search)")
    p.add_argument("--test-problems", type=Path, required=True,
                   help="test problems: the chosen model is evaluated on them once")
    tol = p.add_mutually_exclusive_group(required=True)
    tol.add_argument("--tolerance", type=float, help="accuracy points below dense allowed")
    tol.add_argument("--keep", type=float, help="fraction of dense accuracy to keep")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="one-sided confidence that a level is within tolerance")
    p.add_argument("--pattern", default="unstructured",
                   help="unstructured (search the sparsity) or N:M (search how many leading "
                   "blocks get the pattern)")
    p.add_argument("--quantize", metavar="TARGETS",
                   help="search quantization targets instead, least compressed first, e.g. "
                   "w8a16,w4a16,w3a16,2:4+w4a16 (GPTQ; N:M+scheme prunes and quantizes in one pass)")
    quant_args(p)
    p.add_argument("--method", choices=METHODS, default="sparsegpt")
    recipe_arg(p)
    p.add_argument("--scope", default="all", help="kind of linears (all, attn, mlp)")
    p.add_argument("--step", type=float, default=0.02, help="unstructured: sparsity grid step")
    p.add_argument("--max-sparsity", type=float, default=0.9)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    p.set_defaults(func=run)


def run(a: argparse.Namespace) -> None:
    from rac import models
    from rac.experiments.search import SearchConfig, Tolerance, search
    from rac.prune.config import PruneConfig, Scope
    from rac.prune.masks import Target

    threads(a.threads)
    pattern = Target.parse(None, a.pattern) if a.pattern != "unstructured" else None
    cfg = SearchConfig(
        prune=PruneConfig.with_recipe(a.recipe, method=a.method, target=Target(0.5),
                                      scope=Scope.parse(a.scope),
                                      device=models.pick_device(a.device)),
        tolerance=Tolerance(a.tolerance, a.keep, a.confidence), eval=eval_config(a),
        pattern=pattern, step=a.step, max_sparsity=a.max_sparsity,
        quantize=tuple(t.strip() for t in a.quantize.split(",")) if a.quantize else (),
        quant=quant_config(a, "W4A16" if a.quantize else None))
    result = search(a.model, a.calib, a.problems, a.test_problems, cfg, a.out, show=show)
    print(f"last level within tolerance: {result['chosen']['level']} (sparsity "
          f"{result['chosen']['sparsity']:.3f}); test accuracy {result['test_accuracy']:.3f} +- "
          f"{result['test_accuracy_se']:.3f} (dense {result['dense_test_accuracy']:.3f}) on "
          f"{result['test_problems']} problems")
    print(f"report: {Path(a.out) / 'search.md'}; plot: {Path(a.out) / 'search.png'}; "
          f"model: {Path(a.out) / 'model'}")
