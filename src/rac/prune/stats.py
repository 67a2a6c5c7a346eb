"""Layer statistics, streamed batch by batch over masked tokens only.

For a linear layer with inputs x (one row per calibration token):

    H = sum_t w_t x_t x_t^T          (SparseGPT's Hessian, up to a factor 2)
    col_sq = sum_t w_t x_t ** 2      (Wanda's squared column norms = diag H)

w_t is the token's weight: 1 by default, or a per-segment weight (e.g. decode tokens counted
twice). Padding has weight 0 and never enters. Memory is d_in x d_in whatever the token count.
Every *token* weighs the same, unlike the reference's per-sequence running mean, so a long chain
of thought counts for what it is.
"""

from __future__ import annotations

import torch


class LayerStats:
    def __init__(self, d_in: int, device: torch.device | str, hessian: bool = True):
        self.H = torch.zeros(d_in, d_in, dtype=torch.float32, device=device) if hessian else None
        self._col_sq = None if hessian else torch.zeros(d_in, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """``x``: (tokens, d_in) inputs of kept tokens; ``w``: (tokens,) weights or None."""
        device = self.H.device if self.H is not None else self._col_sq.device
        x = x.to(device, torch.float32)
        if w is not None:
            x = x * w.to(device, torch.float32).sqrt().unsqueeze(1)
        self.tokens += x.shape[0]
        if self.H is not None:
            self.H.addmm_(x.T, x)  # a rank-k update: one GEMM, in place
        else:
            self._col_sq += (x * x).sum(0)

    @property
    def col_sq(self) -> torch.Tensor:
        return torch.diagonal(self.H) if self.H is not None else self._col_sq

    @property
    def col_norm(self) -> torch.Tensor:
        return self.col_sq.sqrt()


def relative_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """||(W - W_hat) X||^2 / ||W X||^2, computed from H = X X^T without the tokens."""
    H = H.to(torch.float64) if H.dtype == torch.float64 else H.float()
    W = W.to(H.dtype)
    D = W - W_hat.to(H.dtype)
    num = torch.sum((D @ H) * D)
    den = torch.sum((W @ H) * W)
    return float(num / den) if den > 0 else 0.0
