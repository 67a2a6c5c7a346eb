"""The GSM8K-style word problems: every step of every reference solution is checked arithmetic,
the answer is the solution's last number, splits never overlap."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from rac.tasks import gsm
from rac.tasks.generators import generate
from rac.tasks.splits import SPLITS

STEP = re.compile(r"(\d+(?: [-+*/] \d+)+) = (\d+)")


def check_steps(solution: str) -> int:
    steps = STEP.findall(solution)
    assert steps, solution
    for expr, result in steps:
        tokens = expr.split()
        value = int(tokens[0])
        for op, num in zip(tokens[1::2], map(int, tokens[2::2])):
            if op == "/":
                assert value % num == 0, (expr, solution)  # divisions come out whole
                value //= num
            else:
                value = {"+": value + num, "-": value - num, "*": value * num}[op]
        assert value == int(result), (expr, result, solution)
    return int(re.findall(r"\d+", solution)[-1])


def test_every_step_is_right_and_ends_on_the_answer():
    problems = gsm.generate(1000, seed=3, split="train")
    assert set(Counter(p.family for p in problems)) == set(gsm.FAMILIES)
    for p in problems:
        assert check_steps(p.solution) == int(p.answer), p
        assert int(p.answer) > 0
        for n in re.findall(r"\d+", p.problem):
            assert n in p.solution  # every given number is used


def test_splits_are_disjoint_and_reproducible():
    by_split = {s: {p.problem for p in gsm.generate(300, 0, s)} for s in SPLITS}
    assert not by_split["test"] & by_split["calib"] and not by_split["test"] & by_split["train"]
    assert [p.problem for p in gsm.generate(50, 0, "test")] == \
        [p.problem for p in gsm.generate(50, 0, "test")]
    assert [p.problem for p in gsm.generate(50, 1, "test")] != \
        [p.problem for p in gsm.generate(50, 0, "test")]


def test_problem_files_of_the_task():
    made = generate("gsm", 20, 0, "calib", ("legs", "wages"))
    assert {p.extra["family"] for p in made} == {"legs", "wages"}
    assert all(p.id.startswith("gsm-") and p.extra["solution"] for p in made)
    with pytest.raises(ValueError, match="unknown families"):
        generate("gsm", 5, 0, "test", ("chess",))
