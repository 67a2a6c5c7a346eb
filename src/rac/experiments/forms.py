"""Accuracy by answer form, for test sets that mix them (a code task's stdin programs and
functions): a calibration source can help one form and hurt the other, and the forms its set
draws on need not be the test set's mix (a RAC set holds the traces of the problems it was drawn
from, and long traces mean few problems). The sweep records each set's mix and each test
problem's form; this section puts both beside the accuracies, paired on the same problems."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rac.calibset import INFO_FILE
from rac.experiments.cells import LABELS, Cell, Group, targets
from rac.metrics import beyond_2se, mean_se, paired_diff


def set_mix(calib_dir: Path, form_of: dict[str, str]) -> dict[str, int]:
    """How many of the problems a calibration set renders are of each form; {} for a set that
    records none (generic text, or one built before sets recorded their problems)."""
    ids = json.loads((Path(calib_dir) / INFO_FILE).read_text()).get("problems", [])
    return dict(sorted(Counter(form_of[i] for i in ids).items()))


def by_form(test_forms: list[str]) -> dict[str, list[int]]:
    """The test problems' positions per form, forms in name order; {} for a single-form set."""
    kinds = sorted(set(test_forms))
    if len(kinds) < 2:
        return {}
    return {f: [i for i, x in enumerate(test_forms) if x == f] for f in kinds}


def _acc(values: list[float], idx: list[int]) -> str:
    m, se = mean_se([values[i] for i in idx])
    return f"{m:.3f} ± {se:.3f}" if len(idx) > 1 else f"{m:.3f} (one problem)"


def diff_within(a: list[float], b: list[float], idx: list[int]) -> tuple[float, float]:
    """a minus b over the problems at ``idx``, paired, and its SE."""
    return paired_diff([a[i] for i in idx], [b[i] for i in idx])


def diff_text(d: float, se: float, n: int) -> str:
    """A paired difference over n problems; * beyond 2 SE, no SE over one problem."""
    if n < 2:
        return f"{d:+.3f} (one problem)"
    return f"{d:+.3f} ± {se:.3f}{' *' if beyond_2se(d, se, n) else ''}"


def forms_section(agg: dict[Cell, Group], sources: list[str], method: str, scope: str,
                  max_new: int, test_forms: list[str], records: list[dict]) -> list[str]:
    """Each cell's accuracy ± SE within each form, RAC - prompt-only paired within each form, and
    the form mix of every calibration set; nothing for a single-form test set."""
    idx = by_form(test_forms)
    if not idx:
        return []
    if any(len(r["pass1"]) != len(test_forms) for r in records):
        return ["## By answer form", "", f"Not shown: the results hold {len(test_forms)} test "
                "problems' forms but evaluations of another number of problems.", ""]
    kinds = list(idx)
    md = [f"## By answer form ({method}, scope {scope})", "",
          "| model | " + " | ".join(f"{f} (n = {len(idx[f])})" for f in kinds) + " |",
          "|---|" + "---|" * len(kinds)]
    dense = agg.get(Cell("dense", max_new))
    if dense:
        md.append("| dense | " + " | ".join(_acc(dense.per_problem, idx[f]) for f in kinds) + " |")
    for t in targets(agg, method, scope, max_new):
        gs = {s: agg.get(Cell(s, max_new, method, t, scope)) for s in sources}
        for s, g in gs.items():
            if g:
                md.append(f"| {LABELS[s]} {t} | "
                          + " | ".join(_acc(g.per_problem, idx[f]) for f in kinds) + " |")
        if gs.get("rac") and gs.get("prompt"):
            a, b = gs["rac"].per_problem, gs["prompt"].per_problem
            md.append(f"| RAC - prompt-only {t} (paired) | "
                      + " | ".join(diff_text(*diff_within(a, b, idx[f]), len(idx[f])) for f in kinds)
                      + " |")
    # one line per set: the records of every calibrated model pruned from a full-budget set
    mixes: dict[tuple[str, int], dict[str, int]] = {}
    for r in records:
        if "calib_forms" in r and r["source"] != "generic" and r.get("fraction", 1.0) == 1:
            key = (r["source"], r.get("seed", 0))
            mixes[key] = mixes.get(key) or r["calib_forms"]
    if mixes:
        md += ["", "Problems each calibration set draws on, by form: " + "; ".join(
            f"{LABELS[s]} seed {seed}: " + (", ".join(f"{n} {f}" for f, n in mix.items()) if mix else
                                            "not recorded (a set built before rac recorded it: delete "
                                            "its cache/calib entry and rerun to rebuild it)")
            for (s, seed), mix in sorted(mixes.items())) + "."]
    return md + [""]
