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
from dataclasses import asdict, dataclass
from pathlib import Path

from rac.experiments.cells import LABELS, Cell, Group, aggregate
from rac.experiments.config import SweepConfig
from rac.experiments.forms import by_form, diff_text, diff_within
from rac.io import RacError, save_figure
from rac.metrics import beyond_2se, paired_diff


@dataclass(frozen=True)
class Pair:
    """One cell in both sweeps: ``other`` minus ``base``, paired on the same problems."""

    cell: Cell
    seeds: tuple[int, ...]  # the calibration seeds both sweeps ran for it
    base: Group
    other: Group
    diff: float
    se: float
    same_eval: bool  # both sweeps read the very same evaluations (a shared cache): not a measurement

    @property
    def beyond_2se(self) -> bool:
        return beyond_2se(self.diff, self.se, self.base.n)


@dataclass(frozen=True)
class SweepComparison:
    pairs: list[Pair]
    only_base: list[Cell]
    only_other: list[Cell]
    # "key: base value -> other value": settings (and versions, the model's contents) that can
    # change a shared cell, and the config entries that only say which cells each grid has
    setting_changes: list[str]
    extent_changes: list[str]
    test_forms: list[str]  # each test problem's answer form ([] where the results do not say)


# config entries that say which cells a grid has, not how a cell both grids have was made
EXTENT = {"seeds", "calibration.sources", "calibration.fractions", "calibration.fraction_sparsities",
          "calibration.first_seed_only", "prune.methods", "prune.sparsities", "prune.patterns",
          "prune.scopes", "prune.fp8", "prune.table4_scopes", "prune.quantize",
          "eval.max_new_tokens", "eval.budget_sparsities"}
# what results.json holds of the inputs' contents (rac.experiments.sweep's identity)
CONTENTS = ("model_fingerprint", "calib_sha256", "generic_text_sha256", "offpolicy_fingerprint")


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


def _by_cell(records: list[dict], name: str) -> dict[Cell, dict[int, dict]]:
    out: dict[Cell, dict[int, dict]] = defaultdict(dict)
    for r in records:
        c, seed = Cell.of(r), r.get("seed", 0)
        if seed in out[c]:
            raise RacError(f"{name} holds {label(c)} twice for seed {seed}; rerun its rac sweep")
        out[c][seed] = r
    return out


def _changes(base: dict, other: dict) -> tuple[list[str], list[str]]:
    # a config written before a setting existed had its default, which is no change
    defaults = _flat(asdict(SweepConfig()))

    def what(r: dict) -> dict[str, object]:
        return {**defaults, **_flat(r["config"]), **_flat(r.get("versions", {}), "versions."),
                **{k: r.get(k) for k in CONTENTS}}

    fa, fb = what(base), what(other)
    lines = {k: f"{k}: {fa.get(k, '(absent)')} -> {fb.get(k, '(absent)')}"
             for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
    extent = [k for k in lines if k in EXTENT or k.startswith("recon.")]
    return [v for k, v in lines.items() if k not in extent], [lines[k] for k in extent]


def compare(base: dict, other: dict, names: tuple[str, str] = ("base", "other")
            ) -> SweepComparison:
    """Pair the cells of two sweeps' ``results.json`` (as dicts)."""
    shas = [r.get("test_sha256") for r in (base, other)]
    for name, sha in zip(names, shas):
        if sha is None:
            raise RacError(f"{name} does not record which test problems it ran (made before rac "
                           "recorded it); rerun its rac sweep with the same --out and --cache, "
                           "whose stages are then all cached, to add it")
    if shas[0] != shas[1]:
        raise RacError(f"{names[0]} and {names[1]} ran different test problems (sha256 {shas[0]} "
                       f"and {shas[1]}); a paired comparison needs the same ones")
    a, b = _by_cell(base["records"], names[0]), _by_cell(other["records"], names[1])
    pairs = []
    for c in (c for c in a if c in b):
        seeds = tuple(sorted(set(a[c]) & set(b[c])))
        if not seeds:
            continue
        sizes = {name: sorted({len(side[c][s]["pass1"]) for s in seeds})
                 for name, side in zip(names, (a, b))}
        if len({n for ns in sizes.values() for n in ns}) != 1:
            raise RacError(f"{label(c)}: the problems per record differ across seeds or sweeps "
                           f"({sizes}); a paired comparison needs the same ones")
        ga, gb = (aggregate([side[c][s] for s in seeds])[c] for side in (a, b))
        d, se = paired_diff(gb.per_problem, ga.per_problem)
        same = all(a[c][s]["pass1"] == b[c][s]["pass1"] and a[c][s]["summary"] == b[c][s]["summary"]
                   for s in seeds)
        pairs.append(Pair(c, seeds, ga, gb, d, se, same))
    paired = {p.cell for p in pairs}
    settings, extent = _changes(base, other)
    forms = [r.get("test_forms") for r in (base, other)]
    if all(forms) and forms[0] != forms[1]:  # the same file, read by rac versions that differ
        raise RacError(f"{names[0]} and {names[1]} give their test problems other answer forms; "
                       "rerun the older sweep with the same --out and --cache (its stages are "
                       "cached) to record them again")
    return SweepComparison(pairs, [c for c in a if c not in paired],
                           [c for c in b if c not in paired], settings, extent,
                           forms[0] or forms[1] or [])


def _difference(p: Pair) -> str:
    if p.same_eval:
        return "same evaluation (one cache entry)"
    return f"{p.diff:+.3f} ± {p.se:.3f}{'*' if p.beyond_2se else ''}"


def markdown(cmp: SweepComparison, names: tuple[str, str]) -> str:
    base, other = names
    md = [f"# rac compare: {other} against {base}", "",
          "Accuracy ± SE over problems (pass@1 averaged over the calibration seeds both ran); the "
          "difference is paired on the same problems, * beyond 2 SE.", ""]
    md += (["Settings that differ (what a difference below can come from):", ""]
           + [f"- `{c}`" for c in cmp.setting_changes] if cmp.setting_changes
           else ["No setting differs: the same config, versions, model and input files."])
    if cmp.extent_changes:
        md += ["", "The grids differ in which cells they have (not in how a shared cell is made): "
               + "; ".join(f"`{c}`" for c in cmp.extent_changes) + "."]
    md += ["", f"| cell | seeds | {base} | {other} | {other} - {base} (paired) | CoT tokens | "
           "max-length hits |", "|---|---|---|---|---|---|---|"]
    for p in cmp.pairs:
        seeds = "-" if p.cell.source == "dense" else ",".join(map(str, p.seeds))
        md.append(f"| {label(p.cell)} | {seeds} | {p.base.accuracy:.3f} ± {p.base.se:.3f} | "
                  f"{p.other.accuracy:.3f} ± {p.other.se:.3f} | {_difference(p)} | "
                  f"{p.base.cot:.0f} / {p.other.cot:.0f} | "
                  f"{p.base.max_hit:.1%} / {p.other.max_hit:.1%} |")
    within = _within_forms(cmp)
    if within:
        forms = next(iter(within.values()))
        md += ["", f"{other} - {base} within each answer form (paired):", "",
               "| cell | " + " | ".join(f"{f} (n = {n})" for f, (n, _, _) in forms.items()) + " |",
               "|---|" + "---|" * len(forms)]
        md += [f"| {label(c)} | " + " | ".join(diff_text(d, se, n) for n, d, se in by.values())
               + " |" for c, by in within.items()]
    for name, cells in ((base, cmp.only_base), (other, cmp.only_other)):
        if cells:
            md += ["", f"Only in {name} ({len(cells)}): " + "; ".join(map(label, cells)) + "."]
    return "\n".join(md) + "\n"


def _within_forms(cmp: SweepComparison) -> dict[Cell, dict[str, tuple[int, float, float]]]:
    """other - base within each answer form of a mixed test set, (n, difference, SE) per form,
    for every pair that is a measurement."""
    idx = by_form(cmp.test_forms)
    return {p.cell: {f: (len(i), *diff_within(p.other.per_problem, p.base.per_problem, i))
                     for f, i in idx.items()}
            for p in cmp.pairs if idx and not p.same_eval and p.base.n == len(cmp.test_forms)}


def to_json(cmp: SweepComparison, names: tuple[str, str]) -> dict:
    within = {c: {"by_form": {f: {"n": n, "diff": d, "se": se if n > 1 else None,
                                  "beyond_2se": beyond_2se(d, se, n)}
                              for f, (n, d, se) in by.items()}}
              for c, by in _within_forms(cmp).items()}
    return {"base": names[0], "other": names[1], "setting_changes": cmp.setting_changes,
            "extent_changes": cmp.extent_changes,
            "pairs": [{"cell": label(p.cell), "seeds": list(p.seeds), "n": p.base.n,
                       "base": {"accuracy": p.base.accuracy, "se": p.base.se},
                       "other": {"accuracy": p.other.accuracy, "se": p.other.se},
                       "diff": p.diff, "se": p.se, "beyond_2se": p.beyond_2se,
                       "same_evaluation": p.same_eval, **within.get(p.cell, {})}
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
