"""One ablation table from finished `rac prune` + `rac eval` runs: accuracy +- SE, the paired
difference against a baseline on the same problems (+- SE), CoT length, and the prune's wall time
and peak RSS from its report.

    python bench/ablation_table.py --base "plain RAC=e50:p50" \\
        "error allocation 0.1=e-err0.1:p-err0.1" "refinement 20=e-50r20:p-50r20" ...

Each row is NAME=EVAL_DIR[:PRUNED_DIR]; every evaluation must cover the base's problems.
Prints a Markdown table; a reporting aid, never a test.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rac.metrics import mean_se, paired_diff


def load(spec: str) -> tuple[str, dict[str, float], dict, dict | None]:
    name, _, dirs = spec.partition("=")
    eval_dir, _, pruned_dir = dirs.partition(":")
    for path, what in ((Path(eval_dir) / "eval.json", "rac eval"),
                       (Path(pruned_dir) / "prune_report.json" if pruned_dir else None, "rac prune")):
        if path is not None and not path.is_file():
            raise SystemExit(f"{name}: {path} does not exist; give the output directory of {what}")
    ev = json.loads((Path(eval_dir) / "eval.json").read_text())
    outcomes = {p["id"]: p["pass1"] for p in ev["problems"]}
    totals = (json.loads((Path(pruned_dir) / "prune_report.json").read_text())["totals"]
              if pruned_dir else None)
    return name, outcomes, ev["summary"], totals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True, help="NAME=EVAL_DIR[:PRUNED_DIR]")
    ap.add_argument("rows", nargs="+", help="NAME=EVAL_DIR[:PRUNED_DIR]")
    a = ap.parse_args()
    base_name, base, _, _ = load(a.base)
    ids = sorted(base)
    print(f"| option | accuracy | vs {base_name} (paired) | mean CoT tokens | prune s | "
          "peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for spec in [a.base, *a.rows]:
        name, outcomes, summary, totals = load(spec)
        missing = set(ids) - set(outcomes)
        if missing:
            raise SystemExit(f"{name}: {len(missing)} of the base's problems are not evaluated")
        acc, se = mean_se([outcomes[i] for i in ids])
        d, dse = paired_diff([outcomes[i] for i in ids], [base[i] for i in ids])
        cost = f"{totals['wall_s']:.1f} | {totals['peak_rss_mb']:.0f}" if totals else "- | -"
        print(f"| {name} | {acc:.3f} +- {se:.3f} | {d:+.3f} +- {dse:.3f} | "
              f"{summary['mean_cot_tokens']:.1f} | {cost} |")


if __name__ == "__main__":
    main()
