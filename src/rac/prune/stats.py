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

from collections.abc import Callable

import torch


class LayerStats:
    # H is symmetric, so only its upper triangle is accumulated, in row blocks of at least this
    # many rows (GEMMs stay large): for d_in = 1536, 6 blocks do 58% of the full product's FLOPs.
    MIN_BLOCK_ROWS = 256

    @classmethod
    def row_blocks(cls, d: int) -> list[tuple[int, int]]:
        """The (start, stop) row blocks of the upper triangle of a d x d H."""
        rows = max(cls.MIN_BLOCK_ROWS, -(-d // 8))
        return [(i, min(i + rows, d)) for i in range(0, d, rows)]

    def __init__(self, d_in: int, device: torch.device | str, hessian: bool = True,
                 dtype: torch.dtype = torch.float32):
        """``dtype``: float32, or float64 for a float64 model (sums that split differently over
        processes then agree to far below any mask decision)."""
        self._upper = torch.zeros(d_in, d_in, dtype=dtype, device=device) if hessian else None
        self._col_sq = None if hessian else torch.zeros(d_in, dtype=dtype, device=device)
        self._mirrored = False  # whether _upper's lower part holds the mirror of its upper part
        self.tokens = 0

    def combine(self, reduce: Callable[[torch.Tensor], None]) -> None:
        """Apply an in-place ``reduce`` (a sum over processes) to the accumulator and the count."""
        acc = self._upper if self._upper is not None else self._col_sq
        reduce(acc)
        tokens = torch.tensor([self.tokens], dtype=torch.int64)
        reduce(tokens)
        self.tokens, self._mirrored = int(tokens), False

    def add(self, x: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """``x``: (tokens, d_in) inputs of kept tokens; ``w``: (tokens,) weights or None."""
        acc = self._upper if self._upper is not None else self._col_sq
        x = x.to(acc.device, acc.dtype)
        if w is not None:
            x = x * w.to(acc.device, acc.dtype).sqrt().unsqueeze(1)
        self.tokens += x.shape[0]
        if self._upper is None:
            self._col_sq += (x * x).sum(0)
            return
        self._mirrored = False
        for i, j in self.row_blocks(x.shape[1]):  # rank-k updates right of the diagonal
            self._upper[i:j, i:].addmm_(x[:, i:j].T, x[:, i:])

    @property
    def H(self) -> torch.Tensor | None:
        """The symmetric H, made in place from the upper triangle (no second d x d copy: for a
        1.5B's down projection, 321 MB): the adds never write below the diagonal blocks, so the
        mirror is only redone after new adds. Read it after the last add: an add changes it."""
        if self._upper is None:
            return None
        if not self._mirrored:
            H = self._upper
            # (an accumulator made under inference mode is written under it, wherever H is read)
            with torch.inference_mode(H.is_inference()):
                for i, j in self.row_blocks(H.shape[0]):  # mirror each block's right part below
                    H[j:, i:j] = H[i:j, j:].T
                    # and its diagonal block's upper triangle: a GEMM's (a, b) and (b, a) need
                    # not round alike (they did not with an AVX2 BLAS)
                    block = H[i:j, i:j]
                    block.copy_(block.triu() + block.triu(1).mT)
            self._mirrored = True
        return self._upper

    @property
    def col_sq(self) -> torch.Tensor:
        return torch.diagonal(self._upper) if self._upper is not None else self._col_sq

    @property
    def col_norm(self) -> torch.Tensor:
        return self.col_sq.sqrt()


class CrossStats:
    """C = sum_t w_t d_t p_t^T over the same tokens: d the inputs a linear sees in the dense
    model, p those it sees after the earlier blocks were pruned. With H = sum p p^T it is all that
    fitting W_hat p to the dense outputs W d needs (see ``rac.prune.asymmetric``)."""

    def __init__(self, d_in: int, device: torch.device | str):
        self.C = torch.zeros(d_in, d_in, dtype=torch.float32, device=device)
        self.tokens = 0

    def add(self, dense: torch.Tensor, pruned: torch.Tensor, w: torch.Tensor | None = None) -> None:
        """``dense``, ``pruned``: (tokens, d_in) inputs of the same kept tokens; ``w``: weights."""
        dense, pruned = dense.to(self.C.device, torch.float32), pruned.to(self.C.device, torch.float32)
        if w is not None:
            dense = dense * w.to(self.C.device, torch.float32).unsqueeze(1)
        self.C.addmm_(dense.T, pruned)
        self.tokens += dense.shape[0]


def all_finite(t: torch.Tensor, chunk: int = 2 ** 22) -> bool:
    """Whether ``t`` holds no NaN or Inf, checked ``chunk`` values at a time: ``isfinite`` makes
    a float temporary and a mask the size of its input (538 MiB for a 1.5B's 306 MiB
    down-projection H checked whole)."""
    return all(bool(torch.isfinite(part).all()) for part in t.reshape(-1).split(chunk))


def relative_error(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    """||(W - W_hat) X||^2 / ||W X||^2, computed from H = X X^T without the tokens."""
    H = H.to(torch.float64) if H.dtype == torch.float64 else H.float()
    W = W.to(H.dtype)
    D = W - W_hat.to(H.dtype)
    num = torch.sum((D @ H) * D)
    den = torch.sum((W @ H) * W)
    return float(num / den) if den > 0 else 0.0
