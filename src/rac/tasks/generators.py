"""The built-in tasks that ``rac problems`` and ``rac sweep`` generate problem files from."""

from __future__ import annotations

from rac.tasks import arith, codegen, gsm
from rac.tasks.problems import Problem

# arith: the embedded model's task; gsm: multi-step word problems; code: programs with hidden tests
MODULES = {"arith": arith, "gsm": gsm, "code": codegen}
TASKS = tuple(MODULES)


def generate(task: str, n: int, seed: int, split: str, families: tuple[str, ...] | None = None
             ) -> list[Problem]:
    """``n`` problems of ``task`` in ``split`` (disjoint splits), reproducible from ``seed``."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; the built-in tasks are {', '.join(TASKS)}")
    if n < 1:
        raise ValueError(f"the number of problems (--n) must be >= 1, got {n}")
    module = MODULES[task]
    made = module.generate(n, seed, split, families or module.FAMILIES)
    if task == "code":  # a code problem has hidden tests instead of an answer
        return [Problem(p.id, p.problem, "", {"tests": p.tests, "solution": p.solution,
                                              "family": p.family, "skeleton": p.skeleton,
                                              "split": split}) for p in made]
    return [Problem(p.id, p.problem, p.answer,
                    {"solution": p.solution, "family": p.family, "skeleton": p.skeleton,
                     "split": split}) for p in made]
