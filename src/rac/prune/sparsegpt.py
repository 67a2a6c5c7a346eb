"""SparseGPT (Frantar & Alistarh, 2023): prune a linear layer and update the kept weights to
compensate, using the inverse Hessian of the layer-wise reconstruction objective.

Names follow the paper and the reference implementation: H = sum x x^T over calibration tokens,
Hinv the upper Cholesky factor of H^-1, W1/Err1 the block being processed. The only deliberate
difference from the reference: the unstructured mask of a block prunes exactly
int(numel * sparsity) weights (the reference's ``<= threshold`` prunes one more).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rac.prune.masks import Target, smallest


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

    def block_for(self, target: Target) -> int:
        """The column block used for ``target``: N:M groups must not straddle two blocks (the
        mask of a group is chosen from the weights updated so far in its block), so for N:M the
        block size is rounded up to a multiple of M."""
        if not target.structured:
            return self.blocksize
        return -(-self.blocksize // target.m) * target.m


def inverse_hessian_factor(H: torch.Tensor, percdamp: float, max_percdamp: float
                           ) -> tuple[torch.Tensor, float]:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, raising the dampening until the
    factorisations succeed (from ``percdamp``, doubling up to ``max_percdamp`` or ``percdamp``,
    whichever is larger). Returns the factor and the dampening used; never falls back silently."""
    mean_diag = torch.mean(torch.diag(H))
    idx = torch.arange(H.shape[0], device=H.device)
    ceiling = max(percdamp, max_percdamp)
    damp = percdamp
    while damp <= ceiling:
        Hd = H.clone()
        Hd[idx, idx] += damp * mean_diag
        L, info = torch.linalg.cholesky_ex(Hd)
        if info == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if info == 0 and torch.isfinite(U).all():
                return U, damp
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
    rows = [w.shape[0] for w in Ws]
    dtype = Ws[0].dtype
    W = torch.cat([w.detach().float() for w in Ws])
    H = H.detach().clone().float()
    columns = W.shape[1]
    if target.structured and columns % target.m:
        raise ValueError(f"{columns} input columns do not split into groups of {target.m}")

    # Inputs that never fire carry no information: prune their weights and keep H invertible.
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0

    Hinv, damp = inverse_hessian_factor(H, cfg.percdamp, cfg.max_percdamp)

    blocksize = cfg.block_for(target)
    for i1 in range(0, columns, blocksize):
        i2 = min(i1 + blocksize, columns)
        W1 = W[:, i1:i2].clone()
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        d1 = torch.diag(Hinv1).reshape(1, -1)

        if target.structured:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        else:
            # Adaptive mask: chosen per block, from the weights already updated by earlier blocks.
            score = W1**2 / d1**2
            mask1 = torch.cat([smallest(s, int(s.numel() * target.sparsity))
                               for s in score.split(rows)])

        for i in range(i2 - i1):
            if target.structured and i % target.m == 0:
                # N:M on the current, already updated weights of this group of m columns (i1 is
                # a multiple of m, so the group is the row's own columns i1+i .. i1+i+m-1).
                score = W1[:, i:i + target.m] ** 2 / d1[:, i:i + target.m] ** 2
                mask1.scatter_(1, i + score.topk(target.n, dim=1, largest=False).indices, True)
            # (w - q) / d, q being the column w with its pruned weights set to zero
            err1 = W1[:, i].masked_fill(~mask1[:, i], 0) / Hinv1[i, i]
            # Spread this column's error over the columns of the block not yet processed. This
            # also takes the column itself to q (w - (w - q) / d * d), up to rounding in its
            # pruned entries, which are set to exactly zero below.
            W1[:, i:] -= err1.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err1

        W[:, i1:i2] = W1.masked_fill_(mask1, 0)
        # Lazy batch update: the rest of the matrix sees the whole block's error at once.
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]

    return [w.to(dtype) for w in W.split(rows)], damp
