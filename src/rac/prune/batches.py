"""Calibration rows -> forward batches, each token carrying its weight in the statistics."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rac.calibset import Row, token_weights


@dataclass
class Batch:
    """Right-padded calibration rows. With causal attention a real token never sees the padding
    after it, and ``weight`` (0 on padding) keeps padding out of every statistic."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    weight: torch.Tensor  # (B, T) token weights, 0 = excluded


def make_batches(rows: list[Row], pad_id: int, segment_weights: dict[str, float] | None = None,
                 max_tokens: int = 8192) -> list[Batch]:
    """Group rows of similar length into batches of at most ``max_tokens`` (padded) tokens;
    ``segment_weights`` ({"decode": 2.0}) weighs tokens by segment, 1 by default."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))
    batches, cur = [], []

    def flush() -> None:
        width = max(len(rows[i].ids) for i in cur)
        ids = torch.full((len(cur), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(cur), width), dtype=torch.long)
        weight = torch.zeros((len(cur), width), dtype=torch.float32)
        for r, i in enumerate(cur):
            row = rows[i]
            ids[r, :len(row.ids)] = torch.tensor(row.ids)
            mask[r, :len(row.ids)] = torch.tensor(row.mask)
            weight[r, :len(row.ids)] = torch.tensor(token_weights(row, segment_weights or {}))
        batches.append(Batch(ids, mask, weight))

    for i in order:
        if cur and len(rows[i].ids) * (len(cur) + 1) > max_tokens:
            flush()
            cur = []
        cur.append(i)
    if cur:
        flush()
    return batches
