"""Tables and figures in the paper's forms, from a sweep's ``results.json``.

Every number carries n and its standard error. The cells (records grouped over calibration
seeds) are ``rac.experiments.cells``; each seed's accuracy and the paired difference between seeds
are in a table of their own. Differences between calibration sources are *paired* on the same
problems. ``write_report`` assembles one section function per table.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rac.calibrate.calib import SOURCES
from rac.evaluate import instructions_markdown
from rac.experiments.cells import LABELS, Cell, Group, aggregate, cell, targets
from rac.experiments.figures import figure1, figure2_md, remove_stale
from rac.experiments.forms import forms_section
from rac.experiments.progress import stage_breakdown
from rac.io import atomic_write_text
from rac.metrics import beyond_2se, mean_se, paired_diff
from rac.prune.masks import Target


@dataclass(frozen=True)
class Comparison:
    """RAC minus prompt-only, paired on the same problems."""

    target: str
    diff: float
    se: float
    beyond_2se: bool


@dataclass(frozen=True)
class Report:
    table1: str  # the first method's Table 1, as Markdown
    comparisons: dict[str, list[Comparison]]  # per method
    figures: list[Path]  # the figures report.md shows, all drawn for it


def _row(label: str, gs: list[Group | None], sources: list[str]) -> tuple[str, Comparison | None]:
    """A table row of one target over the sources: best in bold, then RAC minus prompt-only
    paired on the same problems where the table has both."""
    best = max((g.accuracy for g in gs if g), default=None)
    cells = [f"**{cell(g)}**" if g and g.accuracy == best else cell(g) for g in gs]
    comparison = None
    if "rac" in sources and "prompt" in sources:
        rac, prompt = gs[sources.index("rac")], gs[sources.index("prompt")]
        if rac and prompt:
            d, se = paired_diff(rac.per_problem, prompt.per_problem)
            comparison = Comparison(label, d, se, beyond_2se(d, se, len(rac.per_problem)))
            cells.append(_paired_text(rac.per_problem, prompt.per_problem))
        else:
            cells.append("-")
    return f"| {label} | " + " | ".join(cells) + " |", comparison


def _ramble_row(label: str, gs: list[Group | None]) -> str:
    """Mean CoT tokens / max-length hit rate of one target over the sources."""
    return f"| {label} | " + " | ".join(
        f"{g.cot:.1f} / {g.max_hit:.3f}" if g else "-" for g in gs) + " |"


def _head(first: str, sources: list[str], dense: Group | None) -> list[str]:
    head = [first] + [LABELS[s] for s in sources]
    if "rac" in sources and "prompt" in sources:
        head.append("RAC - prompt (paired)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if dense:
        lines.append(f"| dense | {cell(dense)} |" + " |" * (len(head) - 2))
    return lines


def table1(agg: dict[Cell, Group], sources: list[str], method: str, scope: str, max_new: int,
           dense: Group | None) -> tuple[list[str], list[Comparison]]:
    """Accuracy ± SE (eval time) per target and source; best per row in bold; paired RAC vs
    prompt-only difference; returns the lines and the paired comparisons."""
    lines, comparisons = _head("target", sources, dense), []
    for t in targets(agg, method, scope, max_new):
        line, comparison = _row(str(t), [agg.get(Cell(s, max_new, method, t, scope))
                                         for s in sources], sources)
        lines.append(line)
        comparisons += [comparison] if comparison else []
    return lines, comparisons


def quant_table(v: _View) -> list[str]:
    """The quantization targets in Table 1 form (GPTQ, or SparseGPT pruning and quantizing in
    one pass, on every linear), with their rambling: a row per target."""
    keys = sorted({k for k in v.agg if k.quant and k.max_new_tokens == v.main_new},
                  key=lambda k: (k.target.fraction, str(k.target), k.quant))
    rows = list(dict.fromkeys(replace(k, source="") for k in keys))
    if not rows:
        return []
    md = ["## Quantization: Table 1 form (scope all)", ""] + _head("target", v.sources, v.dense)
    ramble = ["", "Rambling: mean CoT tokens / max-length hit rate", "",
              "| target | " + " | ".join(LABELS[s] for s in v.sources) + " |",
              "|---|" + "---|" * len(v.sources)]
    pairs = [(a, b) for a, b in VERSUS if a in v.sources and b in v.sources]
    versus = _paired_head(v.sources, pairs) if v.dense else []
    for r in rows:
        gs = [v.agg.get(replace(r, source=s)) for s in v.sources]
        md.append(_row(r.compression, gs, v.sources)[0])
        ramble.append(_ramble_row(r.compression, gs))
        if v.dense:
            by = dict(zip(v.sources, gs))
            cells = [_paired_cell(g, v.dense) for g in gs]
            cells += [_paired_cell(by[a], by[b]) for a, b in pairs]
            versus.append(f"| {r.compression} | " + " | ".join(cells) + " |")
    return md + ramble + versus + [""]


# the calibrations compared head to head beside dense, where both were run
VERSUS = (("rac", "generic"), ("offpolicy", "rac"))


def _paired_head(sources: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    head = (["target"] + [f"{LABELS[s]} - dense" for s in sources]
            + [f"{LABELS[a]} - {LABELS[b]}" for a, b in pairs])
    return ["", "Paired on the same problems: each calibration against dense"
            + "".join(f", {LABELS[a]} against {LABELS[b]}" for a, b in pairs) + " (* beyond 2 SE)",
            "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]


def _paired_text(a: list[float], b: list[float]) -> str:
    d, se = paired_diff(a, b)
    return f"{d:+.3f} ± {se:.3f}{' *' if beyond_2se(d, se, len(a)) else ''}"


def _paired_cell(a: Group | None, b: Group | None) -> str:
    """a minus b paired on the same problems, '*' beyond 2 SE; '-' where either is missing."""
    return _paired_text(a.per_problem, b.per_problem) if a and b else "-"


def table3(agg: dict[Cell, Group], sources: list[str], method: str, scope: str,
           max_new: int) -> list[str]:
    """On-policy RAC against the other chains of thought: accuracy ± SE (eval time), the number
    of calibration seeds, and each other source minus the first, paired on the same problems."""
    first, others = sources[0], sources[1:]
    md = ["## Table 3 form: on-policy vs off-policy and reference chains of thought", "",
          "| target | " + " | ".join(LABELS[s] for s in sources) + " | "
          + " | ".join(f"{LABELS[s]} - {LABELS[first]} (paired)" for s in others) + " |",
          "|---|" + "---|" * (len(sources) + len(others))]
    for t in targets(agg, method, scope, max_new):
        gs = {s: agg.get(Cell(s, max_new, method, t, scope)) for s in sources}
        cells = [cell(g) + (f", {len(g.per_seed)} seeds" if g and len(g.per_seed) > 1 else "")
                 for g in gs.values()]
        diffs = []
        for s in others:
            a, b = gs[s], gs[first]
            diffs.append("-" if a is None or b is None else
                         "{:+.3f} ± {:.3f}".format(*paired_diff(a.per_problem, b.per_problem)))
        md.append(f"| {t} | " + " | ".join(cells + diffs) + " |")
    return md + [""]


def seed_table(agg: dict[Cell, Group]) -> list[str]:
    """How much calibration seeds differ: each seed's accuracy ± SE, and the last seed minus the
    first, paired on the same problems, for every cell built with more than one seed."""
    multi = [(k, g) for k, g in agg.items() if len(g.per_seed) > 1]
    if not multi:
        return []
    seeds = sorted({s for _, g in multi for s in g.per_seed})
    md = ["## Calibration seeds: how much they differ", "",
          "| model | " + " | ".join(f"seed {s}" for s in seeds)
          + " | last seed - first seed (paired) |",
          "|---|" + "---|" * (len(seeds) + 1)]
    for k, g in multi:
        accs = ["{:.3f} ± {:.3f}".format(*mean_se(g.per_seed[s])) if s in g.per_seed else "-"
                for s in seeds]
        lo, hi = min(g.per_seed), max(g.per_seed)
        diff = "{:+.3f} ± {:.3f}".format(*paired_diff(g.per_seed[hi], g.per_seed[lo]))
        budget = f" x{k.fraction:g} budget" if k.fraction != 1 else ""
        md.append(f"| {LABELS[k.source]} {k.method} {k.target} {k.scope}{budget}"
                  f"{' fp8' if k.fp8 else ''} max {k.max_new_tokens} | " + " | ".join(accs)
                  + f" | {diff} |")
    return md + [""]


@dataclass(frozen=True)
class _View:
    """What every section of the report reads: the sweep's config and its aggregated cells, and
    the main budget, scope and method that the tables hold fixed."""

    cfg: dict
    agg: dict[Cell, Group]
    sources: list[str]
    main_new: int
    scope: str
    dense: Group | None

    @property
    def method(self) -> str:
        return self.cfg["prune"]["methods"][0]


def _header(v: _View, result: dict, command: str) -> list[str]:
    cfg, n = v.cfg, v.dense.n if v.dense else 0
    md = [
        "# rac sweep report", "",
        f"Model `{cfg['model']}`; {n} test problems; calibration seeds {cfg['seeds']}; "
        f"{cfg['calibration']['budget_tokens']} calibration tokens per source; eval "
        f"{'greedy' if cfg['eval']['temperature'] == 0 else 'T=' + str(cfg['eval']['temperature'])}"
        f", {cfg['eval']['samples']} sample(s), max {v.main_new} new tokens.",
        f"Cells: accuracy ± SE over problems (n = {n}; pass@1 averaged over seeds), and mean "
        "total eval time. Bold: best per row. Paired differences: same problems, * beyond 2 SE.",
    ]
    recipe, epochs = cfg["prune"].get("recipe", "paper"), cfg["prune"].get("refine_epochs", -1)
    if recipe != "paper" or epochs >= 0:
        md += ["", f"Recipe {recipe}; block refinement epochs: "
               f"{epochs if epochs >= 0 else 'the recipe' + chr(39) + 's'}."]
    if cfg["traces"].get("only_correct") and result.get("traces"):
        md += ["", "Traces: only those whose answer is graded correct (" + "; ".join(
            f"{k}: {n['kept']} of {n['traces']} kept" for k, n in result["traces"].items()) + ")."]
    if command:
        md += ["", f"Command: `{command}`"]
    if "overlap" in result:
        o = result["overlap"]
        md += ["", f"Calibration and test problems ({o['calib_problems']} and {o['test_problems']}) "
               f"checked for shared problems (same id, statement up to names, numbers or skeleton: "
               f"`rac.tasks.overlap`): {o['shared']} shared."]
    used = next((r.get("instructions") for r in result["records"] if r["source"] == "dense"), None)
    md += ["", *instructions_markdown(used)[:-1]] if used else []
    md += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items() if v)]
    if result.get("stages"):
        md += ["", "Time spent building each stage in this run (count; cached stages cost nothing, "
               "a resumed one only its batches in this run): " + stage_breakdown(result["stages"]) + "."]
    return md + [""]


def _table1_sections(v: _View, out: Path
                     ) -> tuple[list[str], str, dict[str, list[Comparison]], list[Path]]:
    """Table 1 and Figure 1 of every method; the Markdown, the first method's table, the
    paired comparisons per method and the figures."""
    md: list[str] = []
    table1_md = ""
    comparisons, figures = {}, []
    for method in v.cfg["prune"]["methods"]:
        lines, comps = table1(v.agg, v.sources, method, v.scope, v.main_new, v.dense)
        comparisons[method] = comps
        block = [f"## Table 1 form: {method}, scope {v.scope}", ""] + lines + [""]
        table1_md = table1_md or "\n".join(block)
        md += block
        if v.cfg["prune"]["sparsities"]:  # its axis: an N:M-only grid would draw no point
            fig = out / f"figure1_{method}.png"
            figure1(v.agg, v.sources, method, v.scope, v.main_new, v.dense, fig)
            figures.append(fig)
            md += [f"![Figure 1, {method}]({fig.name})", ""]
        first = next((c for c in comps if c.beyond_2se), None)
        if comps:  # a grid without both sources has no such comparison to summarise
            md += ["RAC and prompt-only first differ by more than 2 SE at "
                   + (f"target {first.target} ({first.diff:+.3f} ± {first.se:.3f})."
                      if first else "no target in this grid."), ""]
    return md, table1_md, comparisons, figures


def _table4(v: _View) -> list[str]:
    t4, patterns = v.cfg["prune"]["table4_scopes"], v.cfg["prune"]["patterns"]
    if not (t4 and patterns):
        return []
    md = ["## Table 4 form: N:M on scopes, with and without FP8", "",
          "| source | pattern | scope | FP8 | accuracy ± SE | generated tokens/s |",
          "|---|---|---|---|---|---|"]
    for s in v.sources:
        for pat in map(Target.of, patterns):
            for sc in t4:
                for fp8 in (False, True):
                    g = v.agg.get(Cell(s, v.main_new, v.method, pat, sc, fp8))
                    if g:
                        md.append(f"| {LABELS[s]} | {pat} | {sc} | {'yes' if fp8 else 'no'} | "
                                  f"{cell(g, time=False)} | {g.tokens_per_s:.0f} |")
    return md + [""]


def _table5(v: _View) -> list[str]:
    budgets = v.cfg["eval"]["max_new_tokens"]
    if len(budgets) < 2:
        return []
    md = ["## Table 5 form: accuracy ± SE (eval time) under max-new-token budgets", "",
          "| model | " + " | ".join(f"max {b}" for b in budgets) + " |",
          "|---|" + "---|" * len(budgets)]
    md.append("| dense | " + " | ".join(cell(v.agg.get(Cell("dense", b))) for b in budgets) + " |")
    for sp in v.cfg["eval"]["budget_sparsities"]:
        for s in v.sources:
            md.append(f"| {LABELS[s]} {sp:g} | " + " | ".join(
                cell(v.agg.get(Cell(s, b, v.method, Target(sp), v.scope))) for b in budgets) + " |")
    return md + [""]


def _fraction_tables(v: _View) -> list[str]:
    c = v.cfg["calibration"]
    if len(c["fractions"]) < 2:
        return []
    md = ["## Calibration-size sweep (fraction of the token budget)", ""]
    for sp in c["fraction_sparsities"]:
        md += [f"Sparsity {sp:g}:", "", "| fraction | tokens | " +
               " | ".join(LABELS[s] for s in v.sources) + " |",
               "|---|---|" + "---|" * len(v.sources)]
        for f in sorted(c["fractions"]):
            md.append(f"| {f:g} | {int(c['budget_tokens'] * f)} | " + " | ".join(
                cell(v.agg.get(Cell(s, v.main_new, v.method, Target(sp), v.scope, fraction=f)))
                for s in v.sources) + " |")
        md.append("")
    return md


def _rambling(v: _View) -> list[str]:
    md: list[str] = []
    for m in v.cfg["prune"]["methods"]:
        md += [f"## Rambling: mean CoT tokens / max-length hit rate ({m})", "",
               "| target | " + " | ".join(LABELS[s] for s in v.sources) + " |",
               "|---|" + "---|" * len(v.sources)]
        if v.dense:
            md.append(f"| dense | {v.dense.cot:.1f} / {v.dense.max_hit:.3f} |"
                      + " |" * (len(v.sources) - 1))
        for t in targets(v.agg, m, v.scope, v.main_new):
            md.append(_ramble_row(str(t), [v.agg.get(Cell(s, v.main_new, m, t, v.scope))
                                           for s in v.sources]))
        md.append("")
    return md


def write_report(result: dict, out: Path, command: str = "") -> Report:
    """Write report.md and the figures into ``out``; returns Table 1 and the comparisons."""
    cfg = result["config"]
    agg = aggregate(result["records"])
    main_new = cfg["eval"]["max_new_tokens"][0]
    v = _View(cfg, agg, [s for s in SOURCES if s in cfg["calibration"]["sources"]], main_new,
              cfg["prune"]["scopes"][0], agg.get(Cell("dense", main_new)))
    # a quantization-only grid has no sparsity table: its quantization table is the headline
    pruned = bool(cfg["prune"]["sparsities"] or cfg["prune"]["patterns"])
    tables, table1_md, comparisons, figures = _table1_sections(v, out) if pruned else \
        ([], "", {}, [])
    md = _header(v, result, command) + tables
    extra = [s for s in ("rac", "offpolicy", "reference") if s in v.sources]
    if pruned:  # quantization targets compare sources in their own table
        md += forms_section(agg, v.sources, v.method, v.scope, main_new,
                            result.get("test_forms", []), result["records"])
        md += table3(agg, extra, v.method, v.scope, main_new) if len(extra) > 1 else []
    quant = quant_table(v)
    md += (seed_table(agg) + quant + _table4(v) + _table5(v) + _fraction_tables(v)
           + (_rambling(v) if pruned else []))
    if "recon" in result:
        md += figure2_md(result["recon"])
        figures.append(out / "recon" / "recon_heatmap.png")
    remove_stale(out, figures)
    atomic_write_text(out / "report.md", "\n".join(md))
    return Report(table1_md or "\n".join(quant), comparisons, figures)
