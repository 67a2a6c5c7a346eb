"""``rac prune``: prune a model layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import model_args, recipe_arg, refine_args, threads
from rac.cli.quantize import (
    describe,
    engine_args,
    engine_options,
    export_arg,
    memory_config,
    quant_args,
    quant_config,
)


def add(sub: argparse._SubParsersAction) -> None:
    from rac.prune.config import METHODS

    p = sub.add_parser("prune", help="prune a model layer by layer")
    model_args(p)
    p.add_argument("--calib", type=Path, help="calibration set from 'rac calib'")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of weights pruned")
    p.add_argument("--pattern", help="N:M: N pruned of every M consecutive inputs, e.g. 2:4")
    engine_args(p)
    recipe_arg(p)
    refine_args(p)
    _extension_args(p)
    p.add_argument("--quantize", metavar="SCHEME",
                   help="also quantize what SparseGPT keeps, in the same pass (joint mode: each "
                   "column pruned and rounded to its grid before its error is spread), e.g. "
                   "W4A16; see rac quantize for the schemes")
    quant_args(p)
    export_arg(p)
    p.add_argument("--fp8", action="store_true",
                   help="then quantize the decoder's linear weights to FP8 E4M3 (per channel); "
                   "the saved weights are dequantized so a CPU can evaluate them")
    p.add_argument("--fp8-export", action="store_true",
                   help="--fp8, and also write OUT/fp8-compressed-tensors (vLLM's FP8 format; "
                   "needs the llmcompressor extra)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run)


def _extension_args(p: argparse.ArgumentParser) -> None:
    """The options beyond the paper: layer allocations, mask swaps, Wanda's group."""
    from rac.prune.wanda import GROUPS

    p.add_argument("--owl-lambda", type=float, default=0.0,
                   help="> 0: OWL layer sparsities within target +- LAMBDA at the same total "
                   "(unstructured; beyond the paper)")
    p.add_argument("--error-span", type=float, default=0.0,
                   help="> 0: per-block sparsities within target +- SPAN at the same total, "
                   "chosen from each block's reconstruction error at a grid of sparsities "
                   "(unstructured; beyond the paper)")
    p.add_argument("--error-step", type=float, default=0.025, help="that grid's step")
    p.add_argument("--mask-swaps", type=int, default=0,
                   help="magnitude/Wanda: then up to N prune-and-grow swaps per row that lower "
                   "the layer's reconstruction error (DSnoT-style; beyond the paper)")
    p.add_argument("--wanda-group", choices=GROUPS, default="row",
                   help="where Wanda compares scores: per output row (the paper) or per layer")


def run(a: argparse.Namespace) -> None:
    from rac import models
    from rac.prune.config import PruneConfig
    from rac.prune.distributed import init_from_env, world
    from rac.prune.masks import Target
    from rac.prune.run import prune_to_dir
    from rac.prune.wanda import WandaConfig

    threads(a.threads)
    init_from_env(models.pick_device(a.device))  # under torchrun: join its ranks
    quant = quant_config(a, a.quantize)
    cfg = PruneConfig.with_recipe(
        a.recipe, method=a.method, target=Target.parse(a.sparsity, a.pattern),
        wanda=WandaConfig(group=a.wanda_group), refine_epochs=a.refine_epochs,
        refine_lr=a.refine_lr, owl_lambda=a.owl_lambda or None, error_span=a.error_span or None,
        error_step=a.error_step, mask_swaps=a.mask_swaps or None, quant=quant,
        **engine_options(a))
    report = prune_to_dir(a.model, a.calib, cfg, a.out, fp8=a.fp8, fp8_export=a.fp8_export,
                          export=a.export, batch_tokens=a.batch_tokens,
                          trust_remote_code=a.trust_remote_code, overwrite=a.overwrite,
                          memory=memory_config(a), dtype=a.dtype)
    if world()[0]:
        return  # rank 0 reports
    t = report.totals
    err = t.mean_relative_error
    print(f"pruned {t.linears} linears with {cfg.method} to {cfg.target}"
          + (f" and {describe(quant)}" if quant else "")
          + f" ({t.sparsity_in_scope:.4f} of weights in scope are zero)"
          + (f", mean relative error {err:.4f}" if err is not None else "")
          + f", {t.wall_s:.1f} s, peak RSS {t.peak_rss_mb:.0f} MB -> {a.out}")
