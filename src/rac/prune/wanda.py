"""Wanda (Sun et al., 2024): score S_ij = |W_ij| * ||X_j||_2, compared within each output row.

``col_norm`` is the norm of input feature j over the (masked, optionally weighted) calibration
tokens. No weight update: Wanda only chooses the mask.
"""

from __future__ import annotations

import torch

from rac.prune.masks import Target, n_of_m, smallest_per_row


def wanda(W: torch.Tensor, col_norm: torch.Tensor, target: Target) -> torch.Tensor:
    score = W.abs().float() * col_norm.float().reshape(1, -1)
    if target.structured:
        mask = n_of_m(score, target.n, target.m)
    else:
        mask = smallest_per_row(score, int(W.shape[1] * target.sparsity))
    return W.masked_fill(mask, 0)
