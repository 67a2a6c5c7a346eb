"""Sparsity targets and the masks they induce: pure tensor functions shared by every pruner."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Target:
    """Either unstructured ``sparsity`` (fraction of weights pruned) or an N:M pattern: ``n``
    weights pruned out of every ``m`` consecutive inputs of a row (2:4 keeps 2 of 4)."""

    sparsity: float = 0.0
    n: int = 0
    m: int = 0

    def __post_init__(self) -> None:
        if self.m:
            if not 0 < self.n < self.m:
                raise ValueError(f"pattern {self.n}:{self.m} is impossible: need 0 < N < M")
            if self.sparsity:
                raise ValueError("give either a sparsity or an N:M pattern, not both")
        elif not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def fraction(self) -> float:
        return self.n / self.m if self.m else self.sparsity

    @classmethod
    def parse(cls, sparsity: float | None, pattern: str | None) -> Target:
        if sparsity is not None and pattern is not None:
            raise ValueError("give either --sparsity or --pattern, not both")
        if pattern is None:
            if sparsity is None:
                raise ValueError("give --sparsity S (unstructured) or --pattern N:M")
            return cls(sparsity=sparsity)
        try:
            n, m = (int(x) for x in pattern.split(":"))
        except ValueError as e:
            raise ValueError(f"pattern {pattern!r} is malformed; write N:M, e.g. 2:4") from e
        return cls(n=n, m=m)

    @classmethod
    def of(cls, text: str) -> Target:
        """A target as ``str`` writes it: '0.5' (unstructured) or 'N:M'."""
        if ":" in text:
            return cls.parse(None, text)
        try:
            sparsity = float(text)
        except ValueError as e:
            raise ValueError(f"target {text!r} is malformed; write a sparsity such as 0.5 or a "
                             "pattern such as 2:4") from e
        return cls(sparsity=sparsity)

    def __str__(self) -> str:
        return f"{self.n}:{self.m}" if self.m else f"{self.sparsity:g}"


def smallest(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly the ``k`` smallest entries of ``score`` (over all of it); among entries
    equal to the k-th smallest, the first ones in memory order. (A selection by the k-th value,
    not a ``topk``: several times faster when k is half a layer.)"""
    flat = score.flatten()
    if k <= 0:
        return torch.zeros_like(score, dtype=torch.bool)
    kth = flat.kthvalue(k).values
    mask = flat < kth
    short = k - int(mask.sum())
    if short > 0:
        mask[(flat == kth).nonzero().squeeze(1)[:short]] = True
    return mask.view_as(score)


def smallest_per_row(score: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of ``k`` entries in all, the smallest of each row: every row loses ``k // rows``, and
    the ``k % rows`` rows whose next-smallest entry is smallest lose one more. So a per-row share
    that is not whole (a layer target of 0.47 from OWL or the error allocation) still reaches the
    layer's total instead of rounding down in every row."""
    rows = score.shape[0]
    base, extra = divmod(k, rows)
    mask = torch.zeros_like(score, dtype=torch.bool)
    take = base + (extra > 0)
    if take == 0:
        return mask
    values, indices = score.topk(take, dim=1, largest=False)
    mask.scatter_(1, indices, True)
    if extra:
        spare = ~smallest(values[:, -1], extra)  # rows that keep their next-smallest entry
        mask[spare.nonzero().squeeze(1), indices[spare, -1]] = False
    return mask


def n_of_m(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Mask of the ``n`` smallest entries in every group of ``m`` consecutive columns."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"{cols} input columns do not split into groups of {m}")
    groups = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.topk(n, dim=2, largest=False).indices, True)
    return mask.reshape(rows, cols)
