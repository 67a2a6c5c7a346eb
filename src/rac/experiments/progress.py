"""The sweep's progress: one line per stage, with what remains estimated from the stages built,
and the time each kind of stage took."""

from __future__ import annotations

import time
from collections.abc import Callable


class Progress:
    """One line per stage, given to ``show``: i of n, its time, elapsed, and an estimate of what
    remains."""

    def __init__(self, total: int, show: Callable[[str], None]):
        self.total, self.done, self.t0, self.worked, self.built = total, 0, time.time(), 0.0, 0
        self.show = show

    def step(self, label: str, seconds: float, cached: bool) -> None:
        self.done += 1
        if not cached:
            self.worked += seconds
            self.built += 1
        left = self.total - self.done
        eta = (self.worked / self.built * left) if self.built else 0.0
        note = "cached" if cached else f"{seconds:.1f}s"
        self.show(f"[{self.done:>3}/{self.total}] {label:<58} {note:>8}  elapsed "
                  f"{time.time() - self.t0:6.0f}s  eta {eta:6.0f}s")


def stage_breakdown(stages: dict) -> str:
    """'eval 31 s (9, 2 of them resumed; 1 cached), ...': seconds spent building each stage here and
    how many were built (resumed ones from an earlier run's journal, whose time is not here) or
    found cached."""
    rows = sorted(stages.items(), key=lambda kv: -kv[1]["seconds"])
    return ", ".join(f"{k} {v['seconds']:.0f} s ({v['built']}"
                     + (f", {v['resumed']} of them resumed" if v.get("resumed") else "")
                     + (f"; {v['cached']} cached" if v["cached"] else "") + ")" for k, v in rows)
