"""The synthetic task: answers checked independently of the generator, steps checked line by line."""

from __future__ import annotations

import random
import re

import pytest

from rac.tasks import arith
from rac.tasks.splits import SPLITS


def independent_answer(p: arith.Problem) -> int:
    text = p.problem
    if text.startswith("Compute "):
        expr = text[len("Compute "):-1]
        assert re.fullmatch(r"[0-9+*]+", expr)
        return eval(expr)  # noqa: S307 - digits and + * only, checked above
    m = re.match(r"\w+ has (\d+) \w+\. \w+ buys (\d+) \w+ of (\d+) \w+ each\.", text)
    if m:
        a, n, each = map(int, m.groups())
        return a + n * each
    assert text.endswith("in total?")
    return sum(int(x) for x in re.findall(r"(\d+) \w+ on \w+day", text))


def test_answers_are_right_for_every_family():
    rng = random.Random(7)
    for _ in range(600):
        p = arith.sample_problem(rng)
        assert int(p.answer) == independent_answer(p), p


def test_every_step_of_the_solution_is_correct():
    rng = random.Random(8)
    for _ in range(300):
        p = arith.sample_problem(rng)
        for line in p.solution.splitlines():
            if m := re.fullmatch(r"(\d+)\+(\d+): (.*) =(\d+)", line):
                a, b, cols, total = m.groups()
                assert int(a) + int(b) == int(total)
                # every column is a one-digit sum with its carry
                for col in cols.split(" "):
                    terms, value = col.split("=")
                    assert sum(map(int, terms.split("+"))) == int(value)
            elif m := re.fullmatch(r"(\d+)\*(\d+)=(\d+)", line):
                assert int(m[1]) * int(m[2]) == int(m[3])
            else:
                assert re.fullmatch(r"[0-9+*]+", line), line  # the restated expression


def test_column_sum_is_written_units_first_with_carries():
    assert arith.column_sum(68, 12) == "68+12: 8+2=10 6+1+1=8 =80"
    assert arith.column_sum(2082, 140) == "2082+140: 2+0=2 8+4=12 0+1+1=2 2=2 =2222"


def test_long_multiplication_skips_zero_digits():
    lines, total = arith.product_steps(307, 20)
    assert total == 6140
    assert lines[:2] == ["7*20=140", "300*20=6000"]


def test_splits_are_disjoint_and_reproducible():
    made = {s: arith.generate(300, seed=0, split=s) for s in SPLITS}
    texts = {s: {p.problem for p in ps} for s, ps in made.items()}
    assert not texts["train"] & texts["test"]
    assert not texts["calib"] & texts["test"]
    assert not texts["train"] & texts["calib"]
    # another seed still never crosses splits
    other = {p.problem for p in arith.generate(300, seed=1, split="train")}
    assert not other & texts["test"]
    assert [p.problem for p in arith.generate(300, seed=0, split="test")] == \
        [p.problem for p in made["test"]]
    assert len(texts["test"]) == 300


def test_chain_of_thought_length_varies_with_difficulty():
    rng = random.Random(3)
    adds = [arith.make_add(rng) for _ in range(400)]
    by_terms: dict[int, list[int]] = {}
    for p in adds:
        by_terms.setdefault(p.problem.count("+") + 1, []).append(len(p.solution))
    assert min(by_terms) == 2 and max(by_terms) == 8
    means = [sum(v) / len(v) for _, v in sorted(by_terms.items())]
    assert means == sorted(means)


def test_unknown_split_or_family_is_refused():
    with pytest.raises(ValueError, match="unknown split"):
        arith.generate(3, 0, "dev")
    with pytest.raises(ValueError, match="unknown families"):
        arith.generate(3, 0, "test", ("add", "div"))
