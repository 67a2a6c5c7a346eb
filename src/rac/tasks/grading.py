"""One entry point for grading a completion, whatever the kind of problem."""

from __future__ import annotations

from rac.tasks.code import grade_code
from rac.tasks.math import Grade, grade_math
from rac.tasks.problems import Problem


def answer_form(problem: Problem) -> str:
    """How a problem is answered, which decides its instruction: ``math`` (a boxed answer),
    ``function`` (every test calls a function: call/expected or check) or ``stdin`` (a program
    that reads standard input)."""
    if problem.kind == "math":
        return "math"
    return "function" if all("input" not in t for t in problem.extra["tests"]) else "stdin"


def grade_problem(completion: str, problem: Problem, thinking: bool = True) -> Grade:
    """``thinking``: the answer is after the last ``</think>``; else anywhere in the completion."""
    if problem.kind == "code":
        return grade_code(completion, problem.extra["tests"], thinking=thinking)
    return grade_math(completion, problem.answer, thinking)
