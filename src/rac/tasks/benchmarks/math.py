"""Math benchmarks, with answers in the form math-verify compares (rac.tasks.math):

- ``math500``: ``HuggingFaceH4/MATH-500`` (``test.jsonl``: ``problem``, ``solution``, ``answer``,
  ``subject``, ``level``, ``unique_id``). The answer is kept as its LaTeX (``\\frac{14}{3}``,
  ``(3, \\frac{\\pi}{2})``); a MATH file without an ``answer`` column (``competition_math``:
  ``problem``, ``level``, ``type``, ``solution``) takes the last ``\\boxed{}`` of the solution.
- ``aime``: ``AI-MO/aimo-validation-aime``, ``HuggingFaceH4/aime_2024`` and the like
  (``problem``/``question``/``Problem``, ``answer``/``Answer``, an optional ``id``/``ID``). AIME
  answers are integers 0-999: ``"033"`` and ``33`` both become ``"33"``.
- ``gsm8k``: ``openai/gsm8k`` (``question``, ``answer`` whose last line is ``#### N``). The answer
  is ``N`` with thousands separators dropped (``#### 1,234`` -> ``1234``); the worked solution
  above it, without the ``<<48/2=24>>`` calculator annotations, is kept as ``solution``. GSM8K has
  no ids: a problem's id is ``gsm8k/<row>``, its place in the file.
"""

from __future__ import annotations

import re

from rac.io import RacError
from rac.tasks.benchmarks.rows import Row, column, row_id
from rac.tasks.problems import Problem

NUMBER = re.compile(r"[-+]?\d+(\.\d+)?")
CALCULATOR = re.compile(r"<<[^<>]*>>")


def _kept(row: Row, names: tuple[str, ...]) -> dict:
    return {n: row[n] for n in names if row.get(n) is not None}


def math500(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        solution = row.get("solution")
        if row.get("answer") is not None:
            answer = str(row["answer"]).strip()
        else:
            from rac.tasks.math import last_boxed  # math-verify is slow to import: only if needed

            answer = last_boxed(column(row, ("solution",), where)) or ""
            if not answer.strip():
                raise RacError(f"{where}: no 'answer' column and no \\boxed{{}} in the solution")
        extra = {**_kept(row, ("subject", "level", "type")), "source": "math500"}
        if solution:
            extra["solution"] = solution
        out.append(Problem(row_id(row, ("unique_id", "id"), "math500", i),
                           column(row, ("problem",), where), answer, extra))
    return out


def integer_answer(value: object) -> str:
    """An integer answer in its plain decimal form (``"033"`` -> ``"33"``); anything else as text."""
    text = str(value).strip()
    return str(int(text)) if re.fullmatch(r"[-+]?\d+", text) else text


def aime(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        answer = column(row, ("answer", "Answer"), where, (str, int))
        extra = {**_kept(row, ("solution", "year", "url")), "source": "aime"}
        if row.get("Solution") is not None and "solution" not in extra:
            extra["solution"] = row["Solution"]
        out.append(Problem(row_id(row, ("id", "ID", "unique_id"), "aime", i),
                           column(row, ("problem", "question", "Problem"), where),
                           integer_answer(answer), extra))
    return out


def gsm8k_answer(text: str, where: str) -> tuple[str, str]:
    """(final answer, worked solution) of a GSM8K answer field."""
    head, sep, final = text.rpartition("####")
    if not sep or not final.strip():
        raise RacError(f"{where}: the answer has no final '#### N' line (is this GSM8K?)")
    final = final.strip().lstrip("$").rstrip(".")
    bare = final.replace(",", "")
    return (bare if NUMBER.fullmatch(bare) else final), CALCULATOR.sub("", head).strip()


def gsm8k(rows: list[Row]) -> list[Problem]:
    out = []
    for i, row in enumerate(rows):
        where = f"row {i}"
        answer, solution = gsm8k_answer(column(row, ("answer",), where), where)
        out.append(Problem(f"gsm8k/{i}", column(row, ("question",), where), answer,
                           {"solution": solution, "source": "gsm8k"}))
    return out
