"""Splits are disjoint by what makes problems differ (family and numbers, or statement
parameters), not by surface text; the overlap check finds near-duplicates by id, statement up to
names, numbers and skeleton."""

from __future__ import annotations

import itertools

import pytest

from rac.tasks import arith, gsm
from rac.tasks.generators import TASKS, generate
from rac.tasks.overlap import shared
from rac.tasks.problems import Problem
from rac.tasks.splits import SPLITS, split_of


def _math(pid: str, text: str, family: str | None = None, **extra) -> Problem:
    return Problem(pid, text, "1", {"family": family, **extra} if family else extra)


def test_overlap_reasons_on_hand_built_problems():
    a = [_math("a1", "Tom has 3 apples. He buys 2 more.", "buy"),
         _math("a2", "Compute 12+30.", "add"),
         _math("a3", "Mia reads 5 pages.", "read", skeleton="read:5")]
    b = [_math("b1", "Ann has  3 apples. She buys 2 MORE.", "buy"),  # names, case, spaces
         _math("b2", "Compute 12+31.", "add"),  # another number: a different problem
         _math("a2", "Something else entirely.", "other"),  # the same id
         _math("b4", "Sam has 3 pears and 2 plums.", "buy"),  # same family, same numbers
         _math("b5", "Leo walks 7 steps.", "read", skeleton="read:5")]
    assert sorted(shared(a, b)) == [("a1", "b1", "statement"), ("a1", "b4", "numbers"),
                                    ("a2", "a2", "id"), ("a3", "b5", "skeleton")]


def test_code_statements_are_compared_without_their_example():
    def code(pid: str, example: str) -> Problem:
        return Problem(pid, f"Print the sum.\n\nExample input:\n```\n{example}\n```", "",
                       {"tests": [{"input": "1", "output": "1"}]})
    assert shared([code("x", "1 2")], [code("y", "3 4")]) == [("x", "y", "statement")]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_four_disjoint_splits_with_no_near_duplicates(task):
    made = {s: generate(task, 150, 0, s) for s in SPLITS}
    assert {p.extra["split"] for p in made["val"]} == {"val"}
    for a, b in itertools.combinations(SPLITS, 2):
        assert shared(made[a], made[b]) == [], (task, a, b)


def test_gsm_problems_that_differ_only_in_names_share_a_split():
    """Under a hash of the text, 42 of 500 gsm test problems equalled a calib or train problem up
    to names (27 of them 'wages', 540 number combinations)."""
    test = gsm.generate(500, 0, "test")
    rest = [p for s in ("train", "calib") for p in gsm.generate(1000, 0, s)]
    as_problems = [[Problem(p.id, p.problem, p.answer, {"family": p.family}) for p in ps]
                   for ps in (test, rest)]
    assert shared(*as_problems) == []
    assert all(split_of(p.skeleton, "gsm") == "test" and p.skeleton.startswith(p.family)
               for p in test)


def test_arith_keeps_the_embedded_models_training_split_for_add_and_mul():
    """The embedded model trained on add and mul problems whose text hashed into [0, 80): their
    skeleton is their text, so its training split is unchanged."""
    for p in arith.generate(200, 0, "train", ("add", "mul")):
        assert p.skeleton == p.problem
    word = arith.generate(50, 0, "test", ("word",))
    assert all(split_of(p.skeleton, "arith") == "test" for p in word)


def test_validation_is_not_the_test_split_with_another_seed():
    """Validation drawn from test with another seed shared 18/500 arith and 32/500 gsm problems."""
    for task in ("arith", "gsm"):
        val, test = generate(task, 300, 0, "val"), generate(task, 300, 0, "test")
        assert shared(val, test) == []


def test_statements_equal_up_to_spacing_punctuation_and_invisible_characters():
    base = _math("a", "Tom has 12 apples. He buys 34 more!", "buy")
    variants = ["tom has 12 apples he buys 34 more", "Tom  has 12 apples; he buys 34 more.",
                "Tom has 12 ap\u200bples. He buys 34 more!", "Tom has \uff11\uff12 apples. He buys 34 more!"]
    others = [_math(f"v{i}", v) for i, v in enumerate(variants)]
    assert [r for _, _, r in shared([base], others)] == ["statement"] * 4
    # a symbol is not surface: these triangles of '*' and '#' are different statements
    star, hash_ = (Problem(c, f"Print copies of the character '{c}'.", "",
                           {"tests": [{"input": "1", "output": c}]}) for c in "*#")
    assert shared([star], [hash_]) == []
