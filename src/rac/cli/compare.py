"""``rac compare``: two sweeps' shared cells, with differences paired on the same problems."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rac.io import RacError

RECORD = {"source", "max_new_tokens", "pass1", "summary"}  # what rac compare reads of a record
SUMMARY = {"n_problems", "samples_per_problem", "accuracy", "accuracy_se", "wall_s",
           "mean_cot_tokens", "max_hit_rate", "tokens_per_s"}


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="pair the cells two sweeps share (same test problems)")
    p.add_argument("base", type=Path, help="a sweep's output directory (or its results.json)")
    p.add_argument("other", type=Path, help="the sweep compared against it")
    p.add_argument("--out", type=Path,
                   help="also write compare.md, compare.json and compare.png here")
    p.set_defaults(func=run)


def _is_record(r: object) -> bool:
    return (isinstance(r, dict) and set(r) >= RECORD and isinstance(r["pass1"], list)
            and isinstance(r["summary"], dict) and set(r["summary"]) >= SUMMARY)


def _is_results(data: object) -> bool:
    return (isinstance(data, dict) and isinstance(data.get("config"), dict)
            and isinstance(data.get("records"), list) and all(map(_is_record, data["records"])))


def _results(path: Path) -> tuple[dict, str]:
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise RacError(f"{path} holds no results.json; give a finished sweep's --out directory")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise RacError(f"{file} is not valid JSON ({e.msg}, line {e.lineno})") from e
    if not _is_results(data):
        raise RacError(f"{file} is not a rac sweep's results.json (a config, and records with "
                       f"{', '.join(sorted(RECORD))})")
    return data, str(file.parent)


def run(a: argparse.Namespace) -> None:
    from rac.experiments.compare import compare, figure, markdown, to_json
    from rac.io import atomic_write_text, write_json

    if a.out and a.out.exists() and not a.out.is_dir():
        raise RacError(f"{a.out} is a file; give a directory for --out")
    (base, name_a), (other, name_b) = _results(a.base), _results(a.other)
    names = (name_a, name_b)
    cmp = compare(base, other, names)
    if not cmp.pairs:
        raise RacError(f"{name_a} and {name_b} share no cell (same source, method, target, "
                       "scope, budget and seed); nothing to pair")
    md = markdown(cmp, names)
    if a.out:  # the figure first, the Markdown that shows it last
        a.out.mkdir(parents=True, exist_ok=True)
        figure(cmp, names, a.out / "compare.png")
        write_json(a.out / "compare.json", to_json(cmp, names))
        atomic_write_text(a.out / "compare.md", md + "\n![paired differences](compare.png)\n")
    print(md, end="")
    if a.out:
        print(f"wrote {a.out / 'compare.md'}, compare.json and compare.png")
