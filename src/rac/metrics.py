"""Means with standard errors: every accuracy, length and difference rac reports carries one."""

from __future__ import annotations

import statistics


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt(n))."""
    m = statistics.fmean(values)
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else 0.0
    return m, se


def paired_diff(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of (a - b) over the same items (e.g. problems), and its SE."""
    return mean_se([x - y for x, y in zip(a, b)])


def beyond_2se(d: float, se: float, n: int) -> bool:
    """|d| > 2 SE; never over one item, whose SE (0) measures nothing."""
    return n > 1 and abs(d) > 2 * se
