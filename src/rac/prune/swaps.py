"""Training-free mask refinement by prune-and-grow swaps (in the spirit of DSnoT, Zhang et al.
2023), on the exact layer reconstruction error rather than DSnoT's estimate of it.

For a mask-only pruning (kept weights keep their dense values: magnitude, Wanda) each output row
has the error e = d H d^T, where d = W - W_hat holds the pruned weights' values and H = X X^T.
A swap regrows one pruned weight j (d_j -> 0) and prunes one kept weight k (d_k -> W_k), so every
row keeps its number of zeros. With g = H d:

    growing j changes e by   -2 d_j g_j + d_j^2 H_jj
    then pruning k by        +2 W_k g'_k + W_k^2 H_kk,   g' = g - d_j H_j

Each round takes, in every row at once, the best j and then the best k for it, and makes the swap
where the sum is negative. Under an N:M pattern k is taken from j's group of M columns, so every
group keeps its N weights. Pure tensor code.
"""

from __future__ import annotations

import torch


def swap_refine(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor, max_swaps: int,
                group: int | None = None) -> torch.Tensor:
    """``W_hat`` (= ``W`` where kept, 0 where pruned) with up to ``max_swaps`` error-lowering swaps
    per row; the same zeros per row (per group of ``group`` columns when given), and an error
    ``(W - W_hat) H (W - W_hat)^T`` per row that never grows."""
    Wf, H = W.float(), H.float()
    kept = W_hat != 0
    D = Wf.masked_fill(kept, 0.0)
    G = D @ H
    diag = torch.diagonal(H)
    rows = torch.arange(W.shape[0], device=W.device)
    inf = torch.tensor(float("inf"), device=W.device)
    cols = torch.arange(W.shape[1], device=W.device)
    for _ in range(max_swaps):
        grow = torch.where(kept, inf, -2 * D * G + D * D * diag)
        j = grow.argmin(1)
        dj = D[rows, j]
        G1 = G - dj.unsqueeze(1) * H[j]
        candidates = kept if group is None else kept & (cols // group == (j // group).unsqueeze(1))
        prune = torch.where(candidates, 2 * Wf * G1 + Wf * Wf * diag, inf)
        k = prune.argmin(1)
        error = (D * G).sum(1)
        gain = grow[rows, j] + prune[rows, k]
        go = gain < -1e-6 * error.clamp(min=1e-30)  # a real improvement, not rounding
        if not go.any():
            break
        r, j, k = rows[go], j[go], k[go]
        kept[r, j], kept[r, k] = True, False
        D[r, j], D[r, k] = 0.0, Wf[r, k]
        G[r] = G1[go] + Wf[r, k].unsqueeze(1) * H[k]
    return W.masked_fill(~kept, 0)
