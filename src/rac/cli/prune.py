"""``rac prune``: prune a model layer by layer."""

from __future__ import annotations

import argparse
from pathlib import Path

from rac.cli.common import model_args, recipe_arg, threads


def add(sub: argparse._SubParsersAction) -> None:
    from rac.prune.config import METHODS

    p = sub.add_parser("prune", help="prune a model layer by layer")
    model_args(p)
    p.add_argument("--calib", type=Path, help="calibration set from 'rac calib'")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of weights pruned")
    p.add_argument("--pattern", help="N:M: N pruned of every M consecutive inputs, e.g. 2:4")
    p.add_argument("--scope", default="all", help="KIND[@LAYERS]: all|attn|mlp at all|"
                   "first-third|first-last-third|0-3,7 (default: all)")
    p.add_argument("--true-sequential", action="store_true",
                   help="also propagate inside each block (q/k/v, o, gate/up, down)")
    p.add_argument("--segment-weights", nargs="+", metavar="SEGMENT=W",
                   help="reweight tokens by segment, e.g. decode=2 (extension beyond the paper)")
    p.add_argument("--balance-segments", action="store_true",
                   help="weigh segments so that prompt and decode tokens have equal shares of the "
                   "statistics (the report gives the weights used)")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT dampening")
    p.add_argument("--dense-targets", action="store_true",
                   help="SparseGPT: fit each layer to the dense model's outputs on the pruned "
                   "model's inputs (corrects error accumulated in earlier blocks; beyond the paper)")
    recipe_arg(p)
    _extension_args(p)
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward batch")
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
    """The options beyond the paper: refinement, layer allocations, mask swaps, Wanda's group."""
    from rac.prune.wanda import GROUPS

    p.add_argument("--refine-epochs", type=int, default=None,
                   help="then N epochs of Adam per block on its kept weights, to match the dense "
                   "block's outputs on the calibration tokens (beyond the paper; default: the "
                   "recipe's)")
    p.add_argument("--refine-lr", type=float, default=None,
                   help="Adam's step size relative to each weight matrix's kept-weight RMS "
                   "(default 0.01)")
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
    from rac.calibset import parse_segment_weights
    from rac.prune.config import PruneConfig, Scope
    from rac.prune.masks import Target
    from rac.prune.run import prune_to_dir
    from rac.prune.sparsegpt import SparseGPTConfig
    from rac.prune.wanda import WandaConfig

    threads(a.threads)
    cfg = PruneConfig.with_recipe(
        a.recipe, method=a.method, target=Target.parse(a.sparsity, a.pattern),
        scope=Scope.parse(a.scope), true_sequential=a.true_sequential,
        sparsegpt=SparseGPTConfig(blocksize=a.blocksize, percdamp=a.percdamp),
        wanda=WandaConfig(group=a.wanda_group),
        segment_weights=parse_segment_weights(a.segment_weights or []),
        balance_segments=a.balance_segments or None, dense_targets=a.dense_targets or None,
        refine_epochs=a.refine_epochs, refine_lr=a.refine_lr, owl_lambda=a.owl_lambda or None,
        error_span=a.error_span or None, error_step=a.error_step, mask_swaps=a.mask_swaps or None,
        device=models.pick_device(a.device))
    report = prune_to_dir(a.model, a.calib, cfg, a.out, fp8=a.fp8, fp8_export=a.fp8_export,
                          batch_tokens=a.batch_tokens, trust_remote_code=a.trust_remote_code,
                          overwrite=a.overwrite)
    t = report.totals
    err = t.mean_relative_error
    print(f"pruned {t.linears} linears with {cfg.method} to {cfg.target} "
          f"({t.sparsity_in_scope:.4f} of weights in scope are zero)"
          + (f", mean relative error {err:.4f}" if err is not None else "")
          + f", {t.wall_s:.1f} s, peak RSS {t.peak_rss_mb:.0f} MB -> {a.out}")
