"""Non-uniform layer sparsity at the same total. Pure tensor code.

- OWL (outlier-weighted layerwise sparsity, Yin et al. 2023): a block whose Wanda scores
  |W_ij| * ||X_j|| hold more outliers (scores above ``m`` times the block's mean score) gets a
  lower sparsity, one with fewer a higher one, linearly within ``target +- lam``; weighted by the
  blocks' sizes the mean stays the target.
- Error-driven: each block's reconstruction error measured at a grid of sparsities around the
  target; sparsity moves, one grid step at a time, from the block where it costs the most error
  to the block where it costs the least, while that lowers the summed error.
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


def sparsity_grid(target: float, span: float, step: float) -> list[float]:
    """``target`` and the points ``step`` apart within ``target +- span``, all in [0, 1). The
    other points are rounded (0.5 + 0.05 is 0.55, not 0.55000000000000004); ``target`` itself is
    kept exactly as given, however many digits it has (1/3), as ``error_sparsities`` looks it up."""
    k = int(round(span / step))
    grid = [round(target + j * step, 10) if j else target for j in range(-k, k + 1)]
    if not (grid[0] >= 0 and grid[-1] < 1):
        raise ValueError(f"sparsities {grid[0]:g}..{grid[-1]:g} leave [0, 1): lower the span")
    return grid


def error_sparsities(curves: list[list[float]], grid: list[float], target: float) -> list[float]:
    """Per-block sparsities from the blocks' error curves (``curves[b][j]``: block ``b``'s error
    at ``grid[j]``) for blocks of equal size, so that the mean stays exactly ``target``: starting
    from ``target`` everywhere, move one step of sparsity between the two blocks where the step
    back saves the most error for the least cost of the step up, while it saves more than it
    costs. For convex curves that is the least summed error on the grid."""
    at = [grid.index(target)] * len(curves)
    while True:
        up = {b: c[j + 1] - c[j] for b, (c, j) in enumerate(zip(curves, at)) if j + 1 < len(grid)}
        down = {b: c[j] - c[j - 1] for b, (c, j) in enumerate(zip(curves, at)) if j > 0}
        gain, raise_b, lower_b = max(((down[d] - up[u], u, d) for u in up for d in down if u != d),
                                     default=(0.0, -1, -1))
        if gain <= 0:
            break
        at[raise_b] += 1
        at[lower_b] -= 1
    return [grid[j] for j in at]
