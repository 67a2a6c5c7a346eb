"""Disjoint splits for generated tasks, and drawing distinct problems of one split.

A problem belongs to the split chosen by a hash of its text, so no seed can put the same problem
in both the training and the test split, whatever task generated it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import TypeVar

SPLITS = {"train": (0, 80), "calib": (80, 90), "test": (90, 100)}
T = TypeVar("T")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_of(problem_text: str) -> str:
    bucket = int(digest(problem_text)[:8], 16) % 100
    for name, (lo, hi) in SPLITS.items():
        if lo <= bucket < hi:
            return name
    raise AssertionError(bucket)


def draw(n: int, split: str, rng: random.Random, families: tuple[str, ...],
         makers: dict[str, Callable[[random.Random], T]], text: Callable[[T], str]) -> list[T]:
    """``n`` distinct problems of ``split``: a family drawn uniformly, then a problem of it, kept
    when its text is new and hashes into the split."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    unknown = set(families) - set(makers)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {', '.join(makers)}")
    seen: set[str] = set()
    out: list[T] = []
    for _ in range(1000 * (n + 10)):
        if len(out) == n:
            return out
        p = makers[rng.choice(families)](rng)
        if text(p) in seen or split_of(text(p)) != split:
            continue
        seen.add(text(p))
        out.append(p)
    if len(out) == n:
        return out
    raise ValueError(f"could only find {len(out)} distinct {split} problems of "
                     f"{', '.join(families)}")
