"""The cells of a sweep's tables: its records grouped over calibration seeds, one cell per
(source, budget, method, target, scope, FP8, calibration fraction, quantization). Accuracy over
several seeds is the per-problem pass@1 averaged over seeds, with its SE over problems."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass

from rac.evaluate import EvalSummary
from rac.metrics import mean_se
from rac.prune.masks import Target

LABELS = {"generic": "generic text", "prompt": "prompt-only", "rac": "RAC",
          "offpolicy": "off-policy CoT", "reference": "reference CoT", "dense": "dense"}


@dataclass(frozen=True)
class Cell:
    """One cell of the tables: a pruned model (or the dense one) under one eval budget, over all
    calibration seeds."""

    source: str
    max_new_tokens: int
    method: str | None = None
    target: Target | None = None
    scope: str | None = None
    fp8: bool = False
    fraction: float = 1.0
    quant: str = ""  # a weight quantization scheme, "" for pruning only

    @classmethod
    def of(cls, record: dict) -> Cell:
        target = record.get("target")
        return cls(record["source"], record["max_new_tokens"], record.get("method"),
                   Target.of(target) if target is not None else None, record.get("scope"),
                   record.get("fp8", False), record.get("fraction", 1.0), record.get("quant", ""))

    @property
    def compression(self) -> str:
        """The target as a row label: '0.5', '2:4', 'W4A16', '2:4 + W4A16'."""
        if not self.quant:
            return str(self.target)
        return f"{self.target} + {self.quant}" if self.target.fraction else self.quant


@dataclass(frozen=True)
class Group:
    """A cell's numbers: accuracy ± SE over problems (pass@1 averaged over seeds), each seed's
    per-problem pass@1, and the means of the length and speed metrics."""

    accuracy: float
    se: float
    n: int
    per_seed: dict[int, list[float]]
    per_problem: list[float]
    wall_s: float
    cot: float
    max_hit: float
    tokens_per_s: float
    sparsity: float


def aggregate(records: list[dict]) -> dict[Cell, Group]:
    """Group records over calibration seeds."""
    groups: dict[Cell, list[dict]] = defaultdict(list)
    for r in records:
        groups[Cell.of(r)].append(r)
    out = {}
    for cell_key, rs in groups.items():
        per_problem = [statistics.fmean(col)
                       for col in zip(*(r["pass1"] for r in rs), strict=True)]
        acc, se = mean_se(per_problem)
        s = [EvalSummary.from_json(r["summary"]) for r in rs]
        out[cell_key] = Group(
            accuracy=acc, se=se, n=len(per_problem),
            per_seed={r.get("seed", 0): r["pass1"] for r in rs}, per_problem=per_problem,
            wall_s=statistics.fmean(x.wall_s for x in s),
            cot=statistics.fmean(x.mean_cot_tokens for x in s),
            max_hit=statistics.fmean(x.max_hit_rate for x in s),
            tokens_per_s=statistics.fmean(x.tokens_per_s for x in s),
            sparsity=rs[0].get("sparsity", 0.0))
    return out


def cell(g: Group | None, time: bool = True) -> str:
    if g is None:
        return "-"
    text = f"{g.accuracy:.3f} ± {g.se:.3f}"
    return text + (f" ({g.wall_s:.0f}s)" if time else "")


def targets(agg: dict[Cell, Group], method: str, scope: str, max_new: int) -> list[Target]:
    """The targets of the main grid, unstructured by sparsity first, then the N:M patterns."""
    ts = {k.target for k in agg if k.method == method and k.scope == scope
          and k.max_new_tokens == max_new and k.fraction == 1.0 and not k.quant}
    return sorted(ts, key=lambda t: (t.structured, t.fraction if not t.structured else str(t)))
