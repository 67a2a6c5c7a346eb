"""GPTQ (Frantar et al., 2023): quantize a linear layer column by column, updating the columns not
yet quantized to compensate, with the same inverse Hessian as SparseGPT.

Both solve Equation 1 of the paper, min ||W X - Q X||^2, over a different set: SparseGPT over
weights with a sparsity pattern, GPTQ over weights on a grid. For H = X X^T and Hinv the upper
Cholesky factor of H^-1, GPTQ takes each column w in turn to its grid point q, and spreads the
error over the later columns,

    Err = (w - q) / Hinv[i, i],   W[:, i:] -= Err Hinv[i, i:]

in blocks of columns with lazy updates of the rest of the matrix. That is SparseGPT's column loop
with nothing pruned and every column rounded to its grid, so it *is* that loop
(``rac.prune.sparsegpt.compress_group``): the dead-input handling, the dampening and its retries,
the block updates are one piece of code for both methods, and joint pruning and quantization
(``rac prune --quantize``) is the same loop with a mask as well. What GPTQ adds is activation
order: the columns of the largest diag(H) first.
"""

from __future__ import annotations

import torch

from rac.prune.masks import Target
from rac.prune.quant_grid import Grid, GridParams
from rac.prune.sparsegpt import SparseGPTConfig, compress_group

DEFAULTS = SparseGPTConfig()  # block size 128, dampening 0.01: GPTQ's defaults too


def gptq(W: torch.Tensor, H: torch.Tensor, grid: Grid, cfg: SparseGPTConfig = DEFAULTS,
         actorder: bool = False) -> tuple[torch.Tensor, GridParams, float]:
    """Quantize ``W`` (rows = outputs, columns = inputs) against ``H``: the dequantized weight in
    W's dtype, its grid, and the dampening used. ``H`` is not modified."""
    (Q,), (params,), damp = gptq_group([W], H, grid, cfg, actorder)
    return Q, params, damp


def gptq_group(Ws: list[torch.Tensor], H: torch.Tensor, grid: Grid,
               cfg: SparseGPTConfig = DEFAULTS, actorder: bool = False
               ) -> tuple[list[torch.Tensor], list[GridParams], float]:
    """GPTQ on weights that read the same inputs (q/k/v, or gate/up), with one inverse for all:
    rows never interact, so each result is what quantizing it alone gives."""
    Qs, params, damp = compress_group(Ws, H, Target(), cfg, grid, actorder)
    assert params is not None  # a grid was given
    return Qs, params, damp
