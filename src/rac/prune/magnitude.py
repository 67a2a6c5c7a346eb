"""Magnitude pruning: drop the smallest |W| (per layer, or per N:M group). Needs no calibration."""

from __future__ import annotations

import torch

from rac.prune.masks import Target, n_of_m, smallest


def magnitude(W: torch.Tensor, target: Target) -> torch.Tensor:
    score = W.abs().float()
    if target.structured:
        mask = n_of_m(score, target.n, target.m)
    else:
        mask = smallest(score, int(W.numel() * target.sparsity))
    return W.masked_fill(mask, 0)
