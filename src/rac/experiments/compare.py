"""``rac compare``: the cells two sweeps share, side by side, with differences paired on the same
problems.

What one change of settings does (a recipe, the eval engine's precision, a calibration budget) is
measured by running a grid once per setting on the same test problems. Reading it off two tables
by eye loses the pairing, which is most of the precision: two models fail mostly the same hard
problems. This pairs each cell of one sweep with the same cell of the other over the calibration
seeds both ran, refuses sweeps whose test problems differ, and lists what else differs between the
two configs, so that nothing but the named change is read into a difference.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rac.experiments.cells import LABELS, Cell, Group, aggregate
from rac.io import RacError, save_figure
from rac.metrics import paired_diff


@dataclass(frozen=True)
class Pair:
    """One cell in both sweeps: ``other`` minus ``base``, paired on the same problems."""

    cell: Cell
    seeds: tuple[int, ...]  # the calibration seeds both sweeps ran for it
    base: Group
    other: Group
    diff: float
    se: float

    @property
    def beyond_2se(self) -> bool:
        return abs(self.diff) > 2 * self.se


@dataclass(frozen=True)
class SweepComparison:
    pairs: list[Pair]
    only_base: list[Cell]
    only_other: list[Cell]
    config_changes: list[str]  # "section.key: base value -> other value"


def label(c: Cell) -> str:
    if c.source == "dense":
        parts = ["dense"]
    else:
        parts = [LABELS.get(c.source, c.source), str(c.method), c.compression, f"scope {c.scope}"]
        parts += ["FP8"] if c.fp8 else []
        parts += [f"x{c.fraction:g} calibration"] if c.fraction != 1 else []
    return ", ".join(parts + [f"max {c.max_new_tokens}"])


def _flat(d: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _by_cell(records: list[dict]) -> dict[Cell, dict[int, dict]]:
    out: dict[Cell, dict[int, dict]] = defaultdict(dict)
    for r in records:
        out[Cell.of(r)][r.get("seed", 0)] = r
    return out


def compare(base: dict, other: dict, names: tuple[str, str] = ("base", "other")
            ) -> SweepComparison:
    """Pair the cells of two sweeps' ``results.json`` (as dicts)."""
    shas = [r.get("test_sha256") for r in (base, other)]
    for name, sha in zip(names, shas):
        if sha is None:
            raise RacError(f"{name} does not record which test problems it ran (made before rac "
                           "recorded it); rerun its rac sweep, whose stages are all cached, to add it")
    if shas[0] != shas[1]:
        raise RacError(f"{names[0]} and {names[1]} ran different test problems (sha256 {shas[0]} "
                       f"and {shas[1]}); a paired comparison needs the same ones")
    a, b = _by_cell(base["records"]), _by_cell(other["records"])
    pairs = []
    for c in (c for c in a if c in b):
        seeds = tuple(sorted(set(a[c]) & set(b[c])))
        if not seeds:
            continue
        ga, gb = (aggregate([side[c][s] for s in seeds])[c] for side in (a, b))
        if ga.n != gb.n:
            raise RacError(f"{label(c)}: {ga.n} problems in {names[0]}, {gb.n} in {names[1]}")
        d, se = paired_diff(gb.per_problem, ga.per_problem)
        pairs.append(Pair(c, seeds, ga, gb, d, se))
    paired = {p.cell for p in pairs}
    fa, fb = _flat(base["config"]), _flat(other["config"])
    changes = [f"{k}: {fa.get(k, '(absent)')!r} -> {fb.get(k, '(absent)')!r}"
               for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
    return SweepComparison(pairs, [c for c in a if c not in paired],
                           [c for c in b if c not in paired], changes)


def markdown(cmp: SweepComparison, names: tuple[str, str]) -> str:
    base, other = names
    md = [f"# rac compare: {other} against {base}", "",
          "Accuracy ± SE over problems (pass@1 averaged over the calibration seeds both ran); the "
          "difference is paired on the same problems, * beyond 2 SE.", ""]
    md += ["Configs differ in:", ""] + [f"- `{c}`" for c in cmp.config_changes] + [""] \
        if cmp.config_changes else ["The two configs are the same.", ""]
    md += [f"| cell | seeds | {base} | {other} | {other} - {base} (paired) | CoT tokens | "
           "max-length hits |", "|---|---|---|---|---|---|---|"]
    for p in cmp.pairs:
        star = "*" if p.beyond_2se else ""
        md.append(f"| {label(p.cell)} | {','.join(map(str, p.seeds))} | {p.base.accuracy:.3f} ± "
                  f"{p.base.se:.3f} | {p.other.accuracy:.3f} ± {p.other.se:.3f} | "
                  f"{p.diff:+.3f} ± {p.se:.3f}{star} | {p.base.cot:.0f} / {p.other.cot:.0f} | "
                  f"{p.base.max_hit:.1%} / {p.other.max_hit:.1%} |")
    for name, cells in ((base, cmp.only_base), (other, cmp.only_other)):
        if cells:
            md += ["", f"Only in {name} ({len(cells)}): " + "; ".join(map(label, cells)) + "."]
    return "\n".join(md) + "\n"


def to_json(cmp: SweepComparison, names: tuple[str, str]) -> dict:
    return {"base": names[0], "other": names[1], "config_changes": cmp.config_changes,
            "pairs": [{"cell": label(p.cell), "seeds": list(p.seeds), "n": p.base.n,
                       "base": {"accuracy": p.base.accuracy, "se": p.base.se},
                       "other": {"accuracy": p.other.accuracy, "se": p.other.se},
                       "diff": p.diff, "se": p.se, "beyond_2se": p.beyond_2se}
                      for p in cmp.pairs],
            "only_base": [label(c) for c in cmp.only_base],
            "only_other": [label(c) for c in cmp.only_other]}


def figure(cmp: SweepComparison, names: tuple[str, str], path: Path) -> None:
    """Each paired difference with its 2 SE interval, one row per cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.45 * len(cmp.pairs) + 1.4))
    ys = list(range(len(cmp.pairs)))[::-1]
    ax.errorbar([p.diff for p in cmp.pairs], ys, xerr=[2 * p.se for p in cmp.pairs], fmt="o",
                capsize=3)
    ax.axvline(0, color="gray", linestyle=":")
    ax.set_yticks(ys, [label(p.cell) for p in cmp.pairs], fontsize=8)
    ax.set_xlabel(f"accuracy, {names[1]} - {names[0]} (paired, ± 2 SE)")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    save_figure(fig, path)
