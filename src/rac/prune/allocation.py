"""Non-uniform layer sparsity at the same total: OWL (outlier-weighted layerwise sparsity, Yin et
al. 2023). A block whose Wanda scores |W_ij| * ||X_j|| hold more outliers (scores above ``m``
times the block's mean score) gets a lower sparsity, one with fewer a higher one, linearly within
``target +- lam``; weighted by the blocks' sizes the mean stays the target. Pure tensor code.
"""

from __future__ import annotations

import torch


def outlier_ratio(weights: list[torch.Tensor], col_norms: list[torch.Tensor], m: float) -> float:
    """The fraction of a block's Wanda scores above ``m`` times their mean (over all its
    linears)."""
    scores = torch.cat([(W.abs().float() * n.float().reshape(1, -1)).flatten()
                        for W, n in zip(weights, col_norms)])
    return float((scores > m * scores.mean()).float().mean())


def owl_sparsities(ratios: list[float], sizes: list[int], target: float, lam: float) -> list[float]:
    """Per-block sparsities: ``target`` shifted by up to ``lam`` against each block's outlier
    ratio, recentred so that the size-weighted mean is exactly ``target``."""
    lo, hi = min(ratios), max(ratios)
    if hi == lo:
        return [target] * len(ratios)
    raw = [target + lam - 2 * lam * (r - lo) / (hi - lo) for r in ratios]  # more outliers: lower
    shift = target - sum(s * n for s, n in zip(raw, sizes)) / sum(sizes)
    out = [s + shift for s in raw]
    if not all(0 <= s < 1 for s in out):
        raise ValueError(f"OWL sparsities {out} leave [0, 1): lower lambda or the target")
    return out
