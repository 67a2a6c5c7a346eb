"""Wanda (Sun et al., 2024): score S_ij = |W_ij| * ||X_j||_2, compared within each output row.

``col_norm`` is the norm of input feature j over the (masked, optionally weighted) calibration
tokens. No weight update: Wanda only chooses the mask. The paper compares scores per output row
(``group="row"``, the default); ``group="layer"`` compares them over the whole layer, as magnitude
pruning does, which lets some rows lose more weights than others (see docs/findings.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rac.prune.masks import Target, n_of_m, smallest, smallest_per_row

GROUPS = ("row", "layer")


@dataclass(frozen=True)
class WandaConfig:
    group: str = "row"  # where unstructured scores are compared; N:M always compares per group

    def __post_init__(self) -> None:
        if self.group not in GROUPS:
            raise ValueError(f"Wanda comparison group {self.group!r} unknown; use {', '.join(GROUPS)}")


def wanda(W: torch.Tensor, col_norm: torch.Tensor, target: Target,
          cfg: WandaConfig = WandaConfig()) -> torch.Tensor:
    score = W.abs().float() * col_norm.float().reshape(1, -1)
    if target.structured:
        mask = n_of_m(score, target.n, target.m)
    else:  # the same count of weights either way; only where scores compete differs
        select = smallest if cfg.group == "layer" else smallest_per_row
        mask = select(score, int(W.numel() * target.sparsity))
    return W.masked_fill(mask, 0)
