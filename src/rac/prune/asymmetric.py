"""Dense targets while propagating pruned inputs: the asymmetric reconstruction objective.

Layer by layer, the inputs p of a linear come from the blocks before it, already pruned, while the
dense model saw d. Fitting the pruned layer to its own dense outputs on the pruned inputs,
||W_hat p - W p||, lets error accumulate from block to block; fitting it to the dense model's
outputs, ||W_hat p - W d||, corrects it. Since

    ||W d - W_hat p||^2 = ||W d - W' p||^2 + ||(W' - W_hat) p||^2,   W' = W C H^-1

with H = sum p p^T and C = sum d p^T (W' is the least-squares fit of the dense outputs on the
pruned inputs, so the cross term vanishes), the asymmetric problem is the ordinary one for W':
SparseGPT on (W', H). Pure tensor code, no I/O.
"""

from __future__ import annotations

import torch


def dense_target_weight(W: torch.Tensor, H: torch.Tensor, C: torch.Tensor, percdamp: float
                        ) -> torch.Tensor:
    """W' = W C (H + damp * mean(diag H) * I)^-1, in W's dtype."""
    Hd = H.double().clone()
    idx = torch.arange(Hd.shape[0], device=Hd.device)
    Hd[idx, idx] += percdamp * torch.mean(torch.diag(Hd))
    dead = torch.diag(H) == 0  # inputs that never fire: keep the identity there
    Hd[dead, dead] = 1
    # W' H_d = W C  <=>  H_d W'^T = C^T W^T  (H_d symmetric)
    Wt = torch.linalg.solve(Hd, C.double().T @ W.double().T)
    return Wt.T.to(W.dtype)
