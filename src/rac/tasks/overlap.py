"""Which problems two problem sets share: the check behind "no test problem leaks into
calibration" (``rac sweep`` and ``rac search`` refuse sets that share any, and
``bench/split_overlap.py`` prints the counts for every split pair).

Two problems are shared when any of these holds (the reason says which):

- ``id``: the same id;
- ``statement``: the same statement up to case, spacing, sentence punctuation, Unicode forms,
  invisible characters and people's names and pronouns (for code, the statement before its
  ``Example``: the example input is drawn per problem);
- ``numbers``: math problems of the same family whose statements hold the same numbers in the
  same order (the arithmetic skeleton, read off the text, whatever the split rule says);
- ``skeleton``: the same ``skeleton`` field, where both problems carry one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Sequence

from rac.io import RacError
from rac.tasks.arith import NAMES
from rac.tasks.problems import Problem

PEOPLE = re.compile(r"\b(" + "|".join(NAMES) + r"|he|she|his|her|him)\b", re.IGNORECASE)
NUMBER = re.compile(r"\d+(?:\.\d+)?")
SURFACE = re.compile(r"[\s.,;:!?]+")  # spacing and sentence punctuation; symbols ('*', '+') stay


def statement(p: Problem) -> str:
    text = p.problem.split("\n\nExample")[0] if p.kind == "code" else p.problem
    text = "".join(c for c in unicodedata.normalize("NFKC", text) if unicodedata.category(c) != "Cf")
    return SURFACE.sub("", PEOPLE.sub("<person>", text).lower())


def keys(p: Problem) -> Iterator[tuple[str, str]]:
    """(reason, key) pairs: two problems are shared when they have one in common."""
    yield "id", p.id
    yield "statement", statement(p)
    family = p.extra.get("family")
    if p.kind == "math" and family is not None:
        yield "numbers", f"{family}|" + ",".join(NUMBER.findall(p.problem))
    if "skeleton" in p.extra:
        yield "skeleton", str(p.extra["skeleton"])


def shared(a: Sequence[Problem], b: Sequence[Problem]) -> list[tuple[str, str, str]]:
    """(id in a, id in b, reason) for every pair of problems that ``a`` and ``b`` share, the first
    reason found per pair."""
    index: dict[tuple[str, str], list[str]] = {}
    for p in b:
        for key in keys(p):
            index.setdefault(key, []).append(p.id)
    out: dict[tuple[str, str], str] = {}
    for p in a:
        for reason, key in keys(p):
            for other in index.get((reason, key), []):
                out.setdefault((p.id, other), reason)
    return [(x, y, reason) for (x, y), reason in out.items()]


def describe(pairs: list[tuple[str, str, str]], what: str) -> str:
    """One line for an error: how many problems are shared, and the first few."""
    first = ", ".join(f"{x} ~ {y} ({reason})" for x, y, reason in pairs[:3])
    return f"{what} share {len({x for x, _, _ in pairs})} problems (e.g. {first})"


def refuse_shared(a: Sequence[Problem], b: Sequence[Problem], what: str, remedy: str) -> None:
    """Raise a one-line ``RacError`` (what is shared, then ``remedy``) if ``a`` and ``b`` share a
    problem."""
    if pairs := shared(a, b):
        raise RacError(f"{describe(pairs, what)}; {remedy}")
