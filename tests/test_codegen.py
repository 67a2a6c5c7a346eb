"""The code task: every family's reference solution passes its hidden tests in the sandbox, a wrong
program does not, splits are disjoint by statement (not by surface text)."""

from __future__ import annotations

import random

import pytest

from rac.cli import main
from rac.tasks import code_stdin, codegen
from rac.tasks.code import grade_code
from rac.tasks.generators import generate
from rac.tasks.overlap import shared, statement
from rac.tasks.problems import read_problems
from rac.tasks.sandbox import Limits
from rac.tasks.splits import SPLITS

LIMITS = Limits(wall_s=5, cpu_s=5)


def _split_of_family(family: str) -> str:
    return next(s for s in SPLITS if codegen.statements(s, (family,)))


@pytest.mark.parametrize("family", codegen.FAMILIES)
def test_reference_solutions_pass_and_a_wrong_program_fails(family):
    for p in codegen.generate(2, seed=1, split=_split_of_family(family), families=(family,)):
        assert len(p.tests) == code_stdin.N_TESTS
        completion = f"Here is my solution.\n```python\n{p.solution}```"
        g = grade_code(completion, p.tests, LIMITS, thinking=False)
        assert g.correct, (family, g.reason, p.problem)
        wrong = grade_code("```python\nprint(0)\n```", p.tests, LIMITS, thinking=False)
        assert not wrong.correct
        assert "Example" in p.problem  # one more case, shown; the tests stay hidden


def test_every_statement_parameter_gives_its_own_statement():
    """Splits hash the statement parameters, so two parameter sets must never give one statement
    (it would then sit in two splits)."""
    texts = {}
    for family, (build, grid) in codegen.FAMILY_TABLE.items():
        assert len(set(grid)) == len(grid), family
        for params in grid:
            text = build(random.Random(0), *params)[0].split("\n\nExample")[0]
            assert text not in texts, (family, params, texts.get(text))
            texts[text] = (family, params)


def test_a_statement_lives_in_one_split_and_the_test_split_has_100():
    by_split = {s: {codegen.skeleton(f, p) for f, ps in codegen.statements(s).items() for p in ps}
                for s in SPLITS}
    assert sum(map(len, by_split.values())) == sum(len(g) for _, g in codegen.FAMILY_TABLE.values())
    for a in SPLITS:
        for b in SPLITS:
            assert a == b or not by_split[a] & by_split[b]
    assert len(by_split["test"]) >= 100


def test_table2_sets_share_no_statement():
    """Table 2's sets (calib 600, test 50, seed 0): 45 of the 50 test statements were in calib when
    splits hashed the whole text (example input included)."""
    test, calib = generate("code", 50, 0, "test"), generate("code", 600, 0, "calib")
    assert not {statement(p) for p in test} & {statement(p) for p in calib}
    assert shared(test, calib) == []
    assert {p.extra["split"] for p in test} == {"test"}


def test_a_draw_uses_every_statement_of_a_family_before_repeating_one():
    grid = codegen.statements("calib", ("fizz",))["fizz"]
    made = codegen.generate(len(grid), 0, "calib", ("fizz",))
    assert sorted(p.skeleton for p in made) == sorted(codegen.skeleton("fizz", g) for g in grid)


def test_families_and_problem_files(tmp_path, capsys):
    assert len(codegen.FAMILIES) >= 20
    out = tmp_path / "code.jsonl"
    assert main(["problems", "--task", "code", "--n", "24", "--split", "val", "--out", str(out)]) == 0
    problems = read_problems(out)
    assert all(p.kind == "code" and p.extra["tests"] for p in problems)
    assert len({p.extra["family"] for p in problems}) >= 8
    assert {p.extra["split"] for p in problems} == {"val"}
    capsys.readouterr()
