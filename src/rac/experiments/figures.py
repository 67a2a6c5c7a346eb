"""The report's figures: Figure 1 (accuracy, eval time and CoT length against sparsity, per
calibration source), from the cells of a sweep, and Figure 2's section."""

from __future__ import annotations

from pathlib import Path

from rac.experiments.cells import LABELS, Cell, Group
from rac.io import save_figure


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


def figure2_md(r: dict) -> list[str]:
    """The report's Figure 2 section: the recon means and the heatmap drawn by the sweep."""
    a, b = list(r["per_model"])
    md = ["## Figure 2 form: token-wise last-layer error", "",
          f"{r['n_problems']} held-out problems, teacher-forced on the dense greedy rollout.",
          "", "| model | mean error, prompt | mean error, decode |", "|---|---|---|"]
    for lab, e in r["per_model"].items():
        md.append(f"| {LABELS.get(lab, lab)} | {e['mean_error_prompt']:.4f} | "
                  f"{e['mean_error_decode']:.4f} |")
    return md + ["", f"Mean ratio e({a})/e({b}): prompt {r['mean_ratio_prompt']:.3f}, decode "
                 f"{r['mean_ratio_decode']:.3f}.", "", "![Figure 2](recon/recon_heatmap.png)", ""]


def remove_stale(out: Path, figures: list[Path]) -> None:
    """Remove the Figure 1 files in ``out`` that a report did not draw: another grid's, from an
    earlier sweep into the same directory, would pass for this report's."""
    for stale in set(out.glob("figure1_*.png")) - set(figures):
        stale.unlink()
