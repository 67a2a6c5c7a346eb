"""SparseGPT (Frantar & Alistarh, 2023): prune a linear layer and update the kept weights to
compensate, using the inverse Hessian of the layer-wise reconstruction objective.

Names follow the paper and the reference implementation: H = sum x x^T over calibration tokens,
Hinv the upper Cholesky factor of H^-1, W1/Q1/Err1 the block being processed. The only deliberate
difference from the reference: the unstructured mask of a block prunes exactly
int(numel * sparsity) weights (the reference's ``<= threshold`` prunes one more).

The column loop is also SparseGPT's joint mode: given a quantization grid, each column is pruned
*and rounded to its grid* before its error is spread over the columns not yet processed, so one
pass compensates both errors. With nothing to prune it is GPTQ (``rac.prune.gptq``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rac.prune.masks import Target, smallest
from rac.prune.quant_grid import Grid, GridParams, fit_groups
from rac.prune.stats import all_finite


class CholeskyError(RuntimeError):
    """H stayed numerically indefinite even with the largest dampening allowed."""


@dataclass(frozen=True)
class SparseGPTConfig:
    blocksize: int = 128
    percdamp: float = 0.01  # dampening, as a fraction of mean(diag H)
    max_percdamp: float = 1.0  # on a Cholesky failure, dampening doubles up to this (or percdamp)

    def __post_init__(self) -> None:
        if self.blocksize < 1:
            raise ValueError(f"SparseGPT block size must be >= 1, got {self.blocksize}")
        if not self.percdamp > 0:
            raise ValueError(f"SparseGPT dampening must be > 0, got {self.percdamp}")

    def block_for(self, target: Target, group_size: int | None = None) -> int:
        """The column block used for ``target``: N:M groups must not straddle two blocks (the
        mask of a group is chosen from the weights updated so far in its block), nor quantization
        groups whose grid is fit when their first column is reached (``group_size``), so the
        block size is rounded up to a multiple of M and of the group size."""
        unit = math.lcm(target.m if target.structured else 1, group_size or 1)
        return -(-self.blocksize // unit) * unit


def inverse_hessian_factor(H: torch.Tensor, percdamp: float, max_percdamp: float,
                           dead: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, raising the dampening until the
    factorisations succeed (from ``percdamp``, doubling up to ``max_percdamp`` or ``percdamp``,
    whichever is larger). ``dead``: inputs whose diagonal entry counts as 1 (those that never
    fire). Returns the factor and the dampening used; never falls back silently. ``H`` is not
    modified."""
    diag = torch.diag(H)  # a copy
    if dead is not None:
        diag[dead] = 1
    mean_diag = torch.mean(diag)
    idx = torch.arange(H.shape[0], device=H.device)
    info = torch.empty((), dtype=torch.int32, device=H.device)
    ceiling = max(percdamp, max_percdamp)
    damp = percdamp
    while damp <= ceiling:
        Hd = H.clone()
        Hd[idx, idx] = diag + damp * mean_diag
        # The three steps in place in one d x d matrix beside H (at d = 8960, 321 MB in float32,
        # where separate results took three). LAPACK works on column-major matrices and Hd.mT
        # is one, so torch makes no copy; Hd is symmetric, so Hd.mT holds the same matrix (the
        # same bits as separate results when H is exactly symmetric, as LayerStats.H is). The
        # factor is returned as that column-major view.
        F = Hd.mT
        torch.linalg.cholesky_ex(F, out=(F, info))
        if info == 0:
            torch.cholesky_inverse(F, out=F)
            torch.linalg.cholesky_ex(F, upper=True, out=(F, info))
            if info == 0 and all_finite(Hd):  # (of F, a copy would be made)
                return F, damp
        damp *= 2
    raise CholeskyError(f"H is not positive definite even with dampening {ceiling:g}")


def sparsegpt(W: torch.Tensor, H: torch.Tensor, target: Target,
              cfg: SparseGPTConfig = SparseGPTConfig()) -> tuple[torch.Tensor, float]:
    """Return the pruned weight (in W's dtype) and the dampening used. ``H`` is not modified."""
    (pruned,), damp = sparsegpt_group([W], H, target, cfg)
    return pruned, damp


def sparsegpt_group(Ws: list[torch.Tensor], H: torch.Tensor, target: Target,
                    cfg: SparseGPTConfig = SparseGPTConfig()) -> tuple[list[torch.Tensor], float]:
    """Prune weights that read the same inputs (q/k/v, or gate/up) against their one ``H``: one
    inverse and one column loop for all their rows. Rows never interact in SparseGPT, and the
    unstructured mask is chosen per weight, so each result is what pruning it alone gives."""
    pruned, _, damp = compress_group(Ws, H, target, cfg)
    return pruned, damp


class _Grids:
    """The grid of every (row, group) while the column loop runs. Per channel, or with activation
    order (a group's columns are then spread over the whole pass), every grid is fit before the
    loop on the weights as given; otherwise a group's grid is fit when its first column is
    reached, on the group's current (already updated) weights, those still to be pruned included
    (a pruned weight is zero on every grid)."""

    def __init__(self, grid: Grid, W: torch.Tensor, order: torch.Tensor, dtype: torch.dtype,
                 actorder: bool):
        self.grid, self.dtype = grid, dtype
        self.group = grid.group_of_columns(W.shape[1])[order]  # of each column, in loop order
        self.late = grid.group_size is not None and not actorder
        if self.late:
            n = grid.groups(W.shape[1])
            self.scale, self.zero = W.new_zeros(W.shape[0], n), W.new_zeros(W.shape[0], n)
        else:
            self.scale, self.zero = fit_groups(W, grid, dtype)

    def quantize(self, j: int, W1: torch.Tensor, i: int, q: torch.Tensor) -> torch.Tensor:
        """Column ``q`` (loop position ``j``, column ``i`` of the block ``W1``) on its grid."""
        g = int(self.group[j])
        if self.late and j % self.grid.group_size == 0:
            self.scale[:, g], self.zero[:, g] = self.grid.fit(W1[:, i:i + self.grid.group_size],
                                                              self.dtype)
        return self.grid.round(q, self.scale[:, g], self.zero[:, g])

    def params(self, rows: list[int]) -> list[GridParams]:
        return [GridParams(s.to(self.dtype), z.to(torch.int8))
                for s, z in zip(self.scale.split(rows), self.zero.split(rows))]


def compress_group(Ws: list[torch.Tensor], H: torch.Tensor, target: Target,
                   cfg: SparseGPTConfig = SparseGPTConfig(), grid: Grid | None = None,
                   actorder: bool = False
                   ) -> tuple[list[torch.Tensor], list[GridParams] | None, float]:
    """Prune weights that read the same inputs to ``target`` and, with ``grid``, quantize what
    they keep, in one column loop. ``actorder`` processes the columns by decreasing diag(H) (the
    inputs with the largest activations first, while the most weights are left to absorb their
    error); the masks and grids are those of the columns in place. Returns the weights (in their
    dtype), their grids (None without ``grid``) and the dampening used. ``H`` is not modified."""
    rows = [w.shape[0] for w in Ws]
    dtype = Ws[0].dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32  # float64 models: in float64
    W = torch.cat([w.detach().to(work) for w in Ws])
    H = H.detach().to(work)  # read only: the factor below works on its own copy
    columns = W.shape[1]
    if target.structured and columns % target.m:
        raise ValueError(f"{columns} input columns do not split into groups of {target.m}")
    if target.structured and actorder:
        raise ValueError("activation order would split N:M groups; use it without a pattern")

    # Inputs that never fire carry no information: prune their weights and keep H invertible.
    dead = torch.diag(H) == 0
    order = (torch.argsort(torch.diag(H), descending=True, stable=True) if actorder
             else torch.arange(columns))
    W[:, dead] = 0
    grids = _Grids(grid, W, order, dtype, actorder) if grid is not None else None
    if actorder:
        W, H, dead = W[:, order], H[order][:, order], dead[order]

    Hinv, damp = inverse_hessian_factor(H, cfg.percdamp, cfg.max_percdamp, dead)
    blocksize = cfg.block_for(target, grid.group_size if grid is not None else None)
    for i1 in range(0, columns, blocksize):
        _compress_block(W, Hinv, i1, min(i1 + blocksize, columns), target, rows, grids)
    if actorder:
        W[:, order] = W.clone()  # back to the columns' own order
    return [w.to(dtype) for w in W.split(rows)], grids.params(rows) if grids else None, damp


def _compress_block(W: torch.Tensor, Hinv: torch.Tensor, i1: int, i2: int, target: Target,
                    rows: list[int], grids: _Grids | None) -> None:
    """Columns i1 .. i2 of ``W``, in place: choose the masks, then per column take w to q
    (pruned and, with ``grids``, rounded to its grid) and spread (w - q) / Hinv[i, i] over the
    block's later columns; then the rest of the matrix gets the whole block's error at once."""
    W1 = W[:, i1:i2].clone()
    Q1 = torch.zeros_like(W1)
    Err1 = torch.zeros_like(W1)
    Hinv1 = Hinv[i1:i2, i1:i2]
    d1 = torch.diag(Hinv1).reshape(1, -1)

    if target.structured or not target.sparsity:
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
    else:
        # Adaptive mask: chosen per block, from the weights already updated by earlier blocks.
        score = W1**2 / d1**2
        mask1 = torch.cat([smallest(s, int(s.numel() * target.sparsity)) for s in score.split(rows)])

    for i in range(i2 - i1):
        if target.structured and i % target.m == 0:
            # N:M on the current, already updated weights of this group of m columns (i1 is
            # a multiple of m, so the group is the row's own columns i1+i .. i1+i+m-1).
            score = W1[:, i:i + target.m] ** 2 / d1[:, i:i + target.m] ** 2
            mask1.scatter_(1, i + score.topk(target.n, dim=1, largest=False).indices, True)
        w = W1[:, i]
        q = w.masked_fill(mask1[:, i], 0)
        if grids is not None:
            q = grids.quantize(i1 + i, W1, i, q)
        Q1[:, i] = q
        err1 = (w - q) / Hinv1[i, i]
        # Spread this column's error over the columns of the block not yet processed (this
        # also takes the column itself to q, up to rounding: Q1 keeps q exactly).
        W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
        Err1[:, i] = err1

    W[:, i1:i2] = Q1
    # Lazy batch update: the rest of the matrix sees the whole block's error at once.
    W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
