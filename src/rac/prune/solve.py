"""Which pruner a config asks for, on the weights of one group of linears that read the same
inputs: pure tensor code (no hooks, no I/O), the step between the statistics and the engine."""

from __future__ import annotations

import torch

from rac.prune.config import QUANTIZER, PruneConfig
from rac.prune.magnitude import magnitude
from rac.prune.quant_grid import GridParams
from rac.prune.sparsegpt import compress_group
from rac.prune.stats import LayerStats
from rac.prune.swaps import swap_refine
from rac.prune.wanda import wanda


def prune_weights(Ws: list[torch.Tensor], stats: LayerStats | None, cfg: PruneConfig
                  ) -> tuple[list[torch.Tensor], float | None, list[GridParams] | None]:
    """Prune weights that read the same inputs (one group) with ``cfg.method``, then refine a
    mask-only pruning by ``cfg.mask_swaps``; with ``cfg.quant`` (SparseGPT, GPTQ) also quantize
    them in the same pass. Returns the weights, SparseGPT's dampening (None for the others) and
    their grids (None unquantized)."""
    def needed() -> LayerStats:
        if stats is None or stats.tokens == 0:
            raise ValueError(f"{cfg.method} needs calibration statistics; none reached this layer")
        return stats

    if cfg.method in ("sparsegpt", QUANTIZER):
        q = cfg.quant
        weights, grids, damp = compress_group(Ws, needed().H, cfg.target, cfg.sparsegpt,
                                              q.grid if q else None, bool(q and q.actorder))
        return weights, damp, grids
    if cfg.method == "magnitude":
        pruned = [magnitude(W, cfg.target) for W in Ws]
    else:
        pruned = [wanda(W, needed().col_norm, cfg.target, cfg.wanda) for W in Ws]
    if cfg.mask_swaps:
        group = cfg.target.m if cfg.target.structured else None
        pruned = [swap_refine(W, P, needed().H, cfg.mask_swaps, group) for W, P in zip(Ws, pruned)]
    return pruned, None, None
