"""One entry point for grading a completion, whatever the kind of problem."""

from __future__ import annotations

from rac.tasks.code import grade_code
from rac.tasks.math import Grade, grade_math
from rac.tasks.problems import Problem


def grade_problem(completion: str, problem: Problem, thinking: bool = True) -> Grade:
    """``thinking``: the answer is after the last ``</think>``; else anywhere in the completion."""
    if problem.kind == "code":
        return grade_code(completion, problem.extra["tests"], thinking=thinking)
    return grade_math(completion, problem.answer, thinking)
