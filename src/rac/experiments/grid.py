"""The grid of a sweep: every pruned model its config asks for (``plan``), one ``Run`` each."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from rac.calibrate.calib import SEEDLESS
from rac.experiments.config import SweepConfig, quant_method, quant_target
from rac.prune.masks import Target


@dataclass(frozen=True)
class Run:
    """One pruned model of the grid."""

    seed: int
    source: str
    fraction: float  # of the calibration token budget
    method: str
    target: Target
    scope: str
    fp8: bool
    quant: str = ""  # a weight quantization scheme (W4A16...), with the target pruned jointly

    def to_json(self) -> dict:
        return {**asdict(self), "target": str(self.target), "sparsity": self.target.fraction}


def plan(cfg: SweepConfig) -> list[Run]:
    """Every pruned model the config asks for, without duplicates, in a stable order."""
    c, p = cfg.calibration, cfg.prune
    targets = [Target(s) for s in p.sparsities] + [Target.of(t) for t in p.patterns]
    runs: list[Run] = []

    def in_size_sweep(target: Target) -> bool:
        return not target.structured and target.sparsity in c.fraction_sparsities

    for seed in cfg.seeds:
        for source in c.sources:
            # a seedless source would give the very same set and model again
            if seed != cfg.seeds[0] and (source in c.first_seed_only or source in SEEDLESS):
                continue
            for method in p.methods:
                for frac in c.fractions:
                    for target in targets:
                        if frac < 1 and not in_size_sweep(target):
                            continue
                        for scope in p.scopes:
                            for fp8 in p.fp8:
                                runs.append(Run(seed, source, frac, method, target, scope, fp8))
                for pattern in (Target.of(t) for t in p.patterns):
                    for scope in p.table4_scopes:
                        for fp8 in (False, True):
                            runs.append(Run(seed, source, 1.0, method, pattern, scope, fp8))
            for target, scheme in map(quant_target, p.quantize):  # on every linear
                runs.append(Run(seed, source, 1.0, quant_method(target), target, "all", False,
                                scheme))
    return list(dict.fromkeys(runs))
