"""Small programming problems with hidden tests (``rac problems --task code``), graded by the
sandbox like LiveCodeBench problems.

Twenty-one families (``code_stdin``: stdin/stdout programs; ``code_functions``: a function and
``{"call", "expected"}`` tests), each with statement parameters (a divisor, a letter, a shift...)
drawn from a finite grid, so that statements differ and a memorised answer does not pass. The
hidden tests come from a reference implementation, never from running generated code, and every
family carries a reference solution that the tests check passes them.

Splits are disjoint by statement: a problem's skeleton is its family and statement parameters
(the example input shown with the statement is surface), and its split is a hash of that
(``rac.tasks.splits``). A test statement therefore never appears in ``calib``, ``val`` or
``train``, whatever the seed; a family with a single statement lives in one split only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from rac.tasks import code_functions, code_stdin
from rac.tasks.splits import check_families, check_split, digest, split_of

FAMILY_TABLE: dict[str, tuple[Callable[..., code_stdin.Built], tuple[tuple, ...]]] = {
    **code_stdin.FAMILIES, **code_functions.FAMILIES}
FAMILIES = tuple(FAMILY_TABLE)


@dataclass(frozen=True)
class CodeProblem:
    problem: str
    tests: list[dict]
    solution: str  # a reference program that passes every test
    family: str
    skeleton: str  # family and statement parameters: its split is a hash of this
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "code-" + digest(self.problem)[:12]


def skeleton(family: str, params: tuple) -> str:
    return ":".join([family, *map(str, params)])


def statements(split: str, families: tuple[str, ...] = FAMILIES) -> dict[str, list[tuple]]:
    """Each family's statement parameters whose skeleton falls in ``split`` (families with none
    left out)."""
    check_split(split)
    check_families(families, FAMILIES)
    out = {f: [p for p in FAMILY_TABLE[f][1] if split_of(skeleton(f, p), "code") == split]
           for f in families}
    return {f: ps for f, ps in out.items() if ps}


def generate(n: int, seed: int, split: str, families: tuple[str, ...] = FAMILIES
             ) -> list[CodeProblem]:
    """``n`` distinct problems of one split, reproducible from ``seed``: a family drawn uniformly
    among those with statements in the split, then one of its least used statements (so a draw
    repeats a statement only once the family's are all used), then random example and hidden
    inputs."""
    pool = statements(split, families)
    if not pool:
        raise ValueError(f"no statement of {', '.join(families)} falls in the {split} split")
    rng = random.Random(f"code-{seed}-{split}")
    used = {(f, p): 0 for f, ps in pool.items() for p in ps}
    seen: set[str] = set()
    out: list[CodeProblem] = []
    names = sorted(pool)
    for _ in range(100 * (n + 10)):
        if len(out) == n:
            break
        family = rng.choice(names)
        fewest = min(used[family, p] for p in pool[family])
        params = rng.choice([p for p in pool[family] if used[family, p] == fewest])
        used[family, params] += 1
        text, tests, solution = FAMILY_TABLE[family][0](rng, *params)
        if text in seen:
            continue
        seen.add(text)
        out.append(CodeProblem(text, tests, solution, family, skeleton(family, params)))
    if len(out) < n:
        raise ValueError(f"could only find {len(out)} distinct {split} problems of "
                         f"{', '.join(families)}")
    return out
