"""Disjoint splits for generated tasks, and drawing distinct problems of one split.

A problem's split is chosen by a hash of its *skeleton*: what makes it a different problem, not
its surface text. For a word problem that is its family and numbers (names and items are
surface: two problems that differ only in a name are the same problem); for a code problem its
family and statement parameters (the random example input shown with the statement is surface).
So no seed can put a problem in two splits, nor a test problem in ``calib`` with another name.

Every task has the same four splits, in proportions of its own: ``arith`` keeps the embedded
model's training split (its ``add`` and ``mul`` skeletons are their whole text, as when the model
was trained), and the code task gives most of its few hundred statements to the held-out splits.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import TypeVar

SPLITS = ("train", "val", "calib", "test")
# percent buckets [lo, hi) of the skeleton hash, per task
BUCKETS: dict[str, dict[str, tuple[int, int]]] = {
    "arith": {"train": (0, 80), "calib": (80, 90), "val": (90, 95), "test": (95, 100)},
    "gsm": {"train": (0, 40), "val": (40, 55), "calib": (55, 75), "test": (75, 100)},
    "code": {"train": (0, 20), "val": (20, 35), "calib": (35, 65), "test": (65, 100)},
}
T = TypeVar("T")


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def split_of(skeleton: str, task: str) -> str:
    bucket = int(digest(skeleton)[:8], 16) % 100
    for name, (lo, hi) in BUCKETS[task].items():
        if lo <= bucket < hi:
            return name
    raise AssertionError(bucket)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


def check_families(families: tuple[str, ...], known: tuple[str, ...]) -> None:
    unknown = set(families) - set(known)
    if unknown:
        raise ValueError(f"unknown families {sorted(unknown)}; choose from {', '.join(known)}")


def draw(n: int, split: str, task: str, rng: random.Random, families: tuple[str, ...],
         makers: dict[str, Callable[[random.Random], T]], skeleton: Callable[[T], str]) -> list[T]:
    """``n`` problems of ``split`` with distinct skeletons (two problems that differ only in names
    are one): a family drawn uniformly, then a problem of it, kept when its skeleton is new and
    hashes into the split."""
    check_split(split)
    check_families(families, tuple(makers))
    seen: set[str] = set()
    out: list[T] = []
    for _ in range(1000 * (n + 10)):
        if len(out) == n:
            return out
        p = makers[rng.choice(families)](rng)
        key = skeleton(p)
        if key in seen or split_of(key, task) != split:
            continue
        seen.add(key)
        out.append(p)
    if len(out) == n:
        return out
    raise ValueError(f"could only find {len(out)} distinct {split} problems of "
                     f"{', '.join(families)}")
