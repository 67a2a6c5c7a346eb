"""Tables and figures in the paper's forms, from a sweep's ``results.json``.

Every number carries n and its standard error. Accuracy over several calibration seeds is the
per-problem pass@1 averaged over seeds, with its SE over problems; each seed's accuracy and the
paired difference between seeds are in a table of their own. Differences between calibration
sources are *paired* on the same problems.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rac.calibrate.calib import SOURCES
from rac.evaluate import EvalSummary
from rac.io import atomic_write_text, save_figure
from rac.metrics import mean_se, paired_diff
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

    @classmethod
    def of(cls, record: dict) -> Cell:
        target = record.get("target")
        return cls(record["source"], record["max_new_tokens"], record.get("method"),
                   Target.of(target) if target is not None else None, record.get("scope"),
                   record.get("fp8", False), record.get("fraction", 1.0))


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


def aggregate(records: list[dict]) -> dict[Cell, Group]:
    """Group records over calibration seeds."""
    groups: dict[Cell, list[dict]] = defaultdict(list)
    for r in records:
        groups[Cell.of(r)].append(r)
    out = {}
    for cell_key, rs in groups.items():
        per_problem = [statistics.fmean(col) for col in zip(*(r["pass1"] for r in rs))]
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


def _targets(agg: dict[Cell, Group], method: str, scope: str, max_new: int) -> list[Target]:
    """The targets of the main grid, unstructured by sparsity first, then the N:M patterns."""
    ts = {k.target for k in agg if k.method == method and k.scope == scope
          and k.max_new_tokens == max_new and k.fraction == 1.0}
    return sorted(ts, key=lambda t: (t.structured, t.fraction if not t.structured else str(t)))


def table1(agg: dict[Cell, Group], sources: list[str], method: str, scope: str, max_new: int,
           dense: Group | None) -> tuple[list[str], list[Comparison]]:
    """Accuracy ± SE (eval time) per target and source; best per row in bold; paired RAC vs
    prompt-only difference; returns the lines and the paired comparisons."""
    head = ["target"] + [LABELS[s] for s in sources]
    compare = "rac" in sources and "prompt" in sources
    if compare:
        head.append("RAC - prompt (paired)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    if dense:
        lines.append(f"| dense | {cell(dense)} |" + " |" * (len(head) - 2))
    comparisons = []
    for t in _targets(agg, method, scope, max_new):
        gs = [agg.get(Cell(s, max_new, method, t, scope)) for s in sources]
        best = max((g.accuracy for g in gs if g), default=None)
        cells = [f"**{cell(g)}**" if g and g.accuracy == best else cell(g) for g in gs]
        if compare:
            rac, prompt = gs[sources.index("rac")], gs[sources.index("prompt")]
            if rac and prompt:
                d, se = paired_diff(rac.per_problem, prompt.per_problem)
                sig = abs(d) > 2 * se
                comparisons.append(Comparison(str(t), d, se, sig))
                cells.append(f"{d:+.3f} ± {se:.3f}{' *' if sig else ''}")
            else:
                cells.append("-")
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines, comparisons


def figure1(agg: dict[Cell, Group], sources: list[str], method: str, scope: str, max_new: int,
            dense: Group | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    panels = [("accuracy", "accuracy (pass@1)"), ("wall_s", "total eval time (s)"),
              ("cot", "mean CoT tokens")]
    for s in sources:
        pts = sorted(((g.sparsity, g) for k, g in agg.items()
                      if k.source == s and k.fraction == 1.0 and k.method == method
                      and k.scope == scope and not k.fp8 and k.max_new_tokens == max_new
                      and not k.target.structured), key=lambda p: p[0])
        if not pts:
            continue
        xs = [p[0] for p in pts]
        for ax, (field, _) in zip(axes, panels):
            ys = [getattr(p[1], field) for p in pts]
            err = [p[1].se for p in pts] if field == "accuracy" else None
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=LABELS[s])
    for ax, (field, title) in zip(axes, panels):
        if dense:
            ax.axhline(getattr(dense, field), color="gray", linestyle=":", label="dense")
        ax.set_xlabel("sparsity")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{method}, scope {scope}, max {max_new} new tokens")
    fig.tight_layout()
    save_figure(fig, path)


def stage_breakdown(stages: dict) -> str:
    """'eval 31 s (9), prune 4 s (8), ...': seconds spent building each stage here (and how many)."""
    rows = sorted(stages.items(), key=lambda kv: -kv[1]["seconds"])
    return ", ".join(f"{k} {v['seconds']:.0f} s ({v['built']}"
                     + (f" + {v['cached']} cached)" if v["cached"] else ")") for k, v in rows)


def table3(agg: dict[Cell, Group], sources: list[str], method: str, scope: str,
           max_new: int) -> list[str]:
    """On-policy RAC against the other chains of thought: accuracy ± SE (eval time), the number
    of calibration seeds, and each other source minus the first, paired on the same problems."""
    first, others = sources[0], sources[1:]
    md = ["## Table 3 form: on-policy vs off-policy and reference chains of thought", "",
          "| target | " + " | ".join(LABELS[s] for s in sources) + " | "
          + " | ".join(f"{LABELS[s]} - {LABELS[first]} (paired)" for s in others) + " |",
          "|---|" + "---|" * (len(sources) + len(others))]
    for t in _targets(agg, method, scope, max_new):
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
        md.append(f"| {LABELS[k.source]} {k.method} {k.target} {k.scope}"
                  f"{' fp8' if k.fp8 else ''} max {k.max_new_tokens} | " + " | ".join(accs)
                  + f" | {diff} |")
    return md + [""]


def write_report(result: dict, out: Path, command: str = "") -> Report:
    """Write report.md and the figures into ``out``; returns Table 1 and the comparisons."""
    cfg = result["config"]
    agg = aggregate(result["records"])
    sources = [s for s in SOURCES if s in cfg["calibration"]["sources"]]
    main_new = cfg["eval"]["max_new_tokens"][0]
    scope = cfg["prune"]["scopes"][0]
    dense = agg.get(Cell("dense", main_new))
    n = dense.n if dense else 0
    md = [
        "# rac sweep report", "",
        f"Model `{cfg['model']}`; {n} test problems; calibration seeds {cfg['seeds']}; "
        f"{cfg['calibration']['budget_tokens']} calibration tokens per source; eval "
        f"{'greedy' if cfg['eval']['temperature'] == 0 else 'T=' + str(cfg['eval']['temperature'])}"
        f", {cfg['eval']['samples']} sample(s), max {main_new} new tokens.",
        f"Cells: accuracy ± SE over problems (n = {n}; pass@1 averaged over seeds), and mean "
        "total eval time. Bold: best per row. Paired differences: same problems, * beyond 2 SE.",
    ]
    if command:
        md += ["", f"Command: `{command}`"]
    md += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items())]
    if result.get("stages"):
        md += ["", "Time spent building each stage in this run (count; cached stages cost "
               "nothing): " + stage_breakdown(result["stages"]) + "."]
    md += [""]
    table1_md = ""
    all_comparisons = {}
    for method in cfg["prune"]["methods"]:
        lines, comps = table1(agg, sources, method, scope, main_new, dense)
        all_comparisons[method] = comps
        block = [f"## Table 1 form: {method}, scope {scope}", ""] + lines + [""]
        table1_md = table1_md or "\n".join(block)
        md += block
        fig = out / f"figure1_{method}.png"
        figure1(agg, sources, method, scope, main_new, dense, fig)
        md += [f"![Figure 1, {method}]({fig.name})", ""]
        first = next((c for c in comps if c.beyond_2se), None)
        md.append("RAC and prompt-only first differ by more than 2 SE at "
                  + (f"target {first.target} ({first.diff:+.3f} ± {first.se:.3f})."
                     if first else "no target in this grid."))
        md.append("")
    method = cfg["prune"]["methods"][0]
    extra = [s for s in ("rac", "offpolicy", "reference") if s in sources]
    if len(extra) > 1:
        md += table3(agg, extra, method, scope, main_new)
    md += seed_table(agg)
    t4 = cfg["prune"]["table4_scopes"]
    if t4 and cfg["prune"]["patterns"]:
        md += ["## Table 4 form: N:M on scopes, with and without FP8", "",
               "| source | pattern | scope | FP8 | accuracy ± SE | generated tokens/s |",
               "|---|---|---|---|---|---|"]
        for s in sources:
            for pat in map(Target.of, cfg["prune"]["patterns"]):
                for sc in t4:
                    for fp8 in (False, True):
                        g = agg.get(Cell(s, main_new, method, pat, sc, fp8))
                        if g:
                            md.append(f"| {LABELS[s]} | {pat} | {sc} | {'yes' if fp8 else 'no'} | "
                                      f"{cell(g, time=False)} | {g.tokens_per_s:.0f} |")
        md.append("")
    budgets = cfg["eval"]["max_new_tokens"]
    if len(budgets) > 1:
        md += ["## Table 5 form: accuracy ± SE (eval time) under max-new-token budgets", "",
               "| model | " + " | ".join(f"max {b}" for b in budgets) + " |",
               "|---|" + "---|" * len(budgets)]
        md.append("| dense | " + " | ".join(cell(agg.get(Cell("dense", b))) for b in budgets) + " |")
        for sp in cfg["eval"]["budget_sparsities"]:
            for s in sources:
                md.append(f"| {LABELS[s]} {sp:g} | " + " | ".join(
                    cell(agg.get(Cell(s, b, method, Target(sp), scope))) for b in budgets) + " |")
        md.append("")
    fracs = cfg["calibration"]["fractions"]
    if len(fracs) > 1:
        md += ["## Calibration-size sweep (fraction of the token budget)", ""]
        for sp in cfg["calibration"]["fraction_sparsities"]:
            md += [f"Sparsity {sp:g}:", "", "| fraction | tokens | " +
                   " | ".join(LABELS[s] for s in sources) + " |",
                   "|---|---|" + "---|" * len(sources)]
            for f in sorted(fracs):
                md.append(f"| {f:g} | {int(cfg['calibration']['budget_tokens'] * f)} | " + " | ".join(
                    cell(agg.get(Cell(s, main_new, method, Target(sp), scope, fraction=f)))
                    for s in sources) + " |")
            md.append("")
    for m in cfg["prune"]["methods"]:
        md += [f"## Rambling: mean CoT tokens / max-length hit rate ({m})", "",
               "| target | " + " | ".join(LABELS[s] for s in sources) + " |",
               "|---|" + "---|" * len(sources)]
        if dense:
            md.append(f"| dense | {dense.cot:.1f} / {dense.max_hit:.3f} |"
                      + " |" * (len(sources) - 1))
        for t in _targets(agg, m, scope, main_new):
            md.append(f"| {t} | " + " | ".join(
                (lambda g: f"{g.cot:.1f} / {g.max_hit:.3f}" if g else "-")(
                    agg.get(Cell(s, main_new, m, t, scope))) for s in sources) + " |")
        md.append("")
    if "recon" in result:
        r = result["recon"]
        a, b = list(r["per_model"])
        md += ["## Figure 2 form: token-wise last-layer error", "",
               f"{r['n_problems']} held-out problems, teacher-forced on the dense greedy rollout.",
               "", "| model | mean error, prompt | mean error, decode |", "|---|---|---|"]
        for lab, v in r["per_model"].items():
            md.append(f"| {LABELS.get(lab, lab)} | {v['mean_error_prompt']:.4f} | "
                      f"{v['mean_error_decode']:.4f} |")
        md += ["", f"Mean ratio e({a})/e({b}): prompt {r['mean_ratio_prompt']:.3f}, decode "
               f"{r['mean_ratio_decode']:.3f}.", "", "![Figure 2](recon/recon_heatmap.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    return Report(table1_md, all_comparisons)
