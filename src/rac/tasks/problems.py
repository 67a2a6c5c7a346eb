"""Problem files: JSONL, one ``{"id", "problem", "answer"}`` per line (the MATH-500 format), or
for code ``{"id", "problem", "tests": [{"input", "output"} | {"call", "expected"} |
{"check", "entry_point"}, ...]}`` (the LiveCodeBench forms and HumanEval's, see rac.tasks.code).
A file holds one kind only.

Extra fields (``solution``, ``family``, ``level``...) are kept as they are, so a user's own
benchmark file runs unchanged.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from pathlib import Path

from rac.io import RacError, atomic_write_text
from rac.tasks.inside import plain

REQUIRED = ("problem", "answer")


@dataclass(frozen=True)
class Problem:
    id: str
    problem: str
    answer: str
    extra: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "code" if "tests" in self.extra else "math"

    def to_json(self) -> dict:
        return {"id": self.id, "problem": self.problem, "answer": self.answer, **self.extra}


def _check_tests(tests: object, where: str) -> None:
    """Each test has one of the three forms, with string values that parse: ``expected`` a Python
    literal of plain data, ``call`` an expression, ``check`` source defining ``check``."""
    if not isinstance(tests, list) or not tests:
        raise RacError(f"{where}: 'tests' must be a non-empty list")
    forms = (("input", "output"), ("call", "expected"), ("check", "entry_point"))
    for i, t in enumerate(tests):
        form = next((f for f in forms if isinstance(t, dict) and set(f) <= set(t)), None)
        if form is None or not all(isinstance(t[k], str) for k in form):
            raise RacError(f"{where}: test {i} must be {{'input', 'output'}}, {{'call', 'expected'}} "
                           "or {'check', 'entry_point'} with string values")
        try:
            if form[0] == "call":
                compile(t["call"], "<call>", "eval")
                plain.literal(t["expected"])
            elif form[0] == "check":
                defined = {n.name for n in ast.parse(t["check"]).body if isinstance(n, ast.FunctionDef)}
                if "check" not in defined or not t["entry_point"].isidentifier():
                    raise ValueError("'check' must define check(candidate) and 'entry_point' be a "
                                     "function name")
        except (SyntaxError, ValueError) as e:
            raise RacError(f"{where}: test {i}: {e}") from None


def parse_line(line: str, where: str) -> Problem:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise RacError(f"{where}: not valid JSON ({e.msg}); each line must be one JSON object") from e
    if not isinstance(row, dict):
        raise RacError(f"{where}: expected a JSON object with 'problem' and 'answer' or 'tests'")
    code = "tests" in row
    for key in ("problem",) if code else REQUIRED:
        if key not in row:
            raise RacError(f"{where}: missing field '{key}'")
        if not isinstance(row[key], (str, int, float)) or isinstance(row[key], bool):
            raise RacError(f"{where}: field '{key}' must be a string or a number")
    if code:
        _check_tests(row["tests"], where)
    pid = row.get("id", row.get("unique_id", row.get("question_id")))
    if pid is None:
        raise RacError(f"{where}: missing field 'id' (or MATH-500's 'unique_id')")
    extra = {k: v for k, v in row.items() if k not in ("id", "problem", "answer")}
    return Problem(str(pid), str(row["problem"]), str(row.get("answer", "")), extra)


def read_problems(path: Path) -> list[Problem]:
    path = Path(path)
    if not path.exists():
        raise RacError(f"problem file {path} does not exist")
    if path.is_dir():
        raise RacError(f"{path} is a directory; give a JSONL problem file")
    problems: list[Problem] = []
    seen: set[str] = set()
    with path.open() as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            p = parse_line(line, f"{path}:{n}")
            if problems and p.kind != problems[0].kind:
                raise RacError(f"{path}:{n}: a {p.kind} problem in a file of {problems[0].kind} "
                               "problems; keep math and code problems in separate files")
            if p.id in seen:
                raise RacError(f"{path}:{n}: duplicate id {p.id!r}")
            seen.add(p.id)
            problems.append(p)
    if not problems:
        raise RacError(f"problem file {path} is empty")
    return problems


def write_problems(path: Path, problems: list[Problem]) -> None:
    atomic_write_text(Path(path), "".join(json.dumps(p.to_json()) + "\n" for p in problems))


def answer_form(problem: Problem) -> str:
    """How a problem is answered, which decides its instruction: ``math`` (a boxed answer),
    ``function`` (every test calls a function: call/expected or check) or ``stdin`` (a program
    that reads standard input)."""
    if problem.kind == "math":
        return "math"
    return "function" if all("input" not in t for t in problem.extra["tests"]) else "stdin"
