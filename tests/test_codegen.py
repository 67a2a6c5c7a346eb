"""The code task: every family's reference solution passes its hidden tests in the sandbox, a wrong
program does not, splits never overlap."""

from __future__ import annotations

import pytest

from rac.cli import main
from rac.tasks import codegen
from rac.tasks.code import grade_code
from rac.tasks.problems import read_problems
from rac.tasks.sandbox import Limits

LIMITS = Limits(wall_s=5, cpu_s=5)


@pytest.mark.parametrize("family", codegen.FAMILIES)
def test_reference_solutions_pass_and_a_wrong_program_fails(family):
    for p in codegen.generate(2, seed=1, split="train", families=(family,)):
        assert len(p.tests) == codegen.N_TESTS
        completion = f"Here is my solution.\n```python\n{p.solution}```"
        g = grade_code(completion, p.tests, LIMITS, thinking=False)
        assert g.correct, (family, g.reason, p.problem)
        wrong = grade_code("```python\nprint(0)\n```", p.tests, LIMITS, thinking=False)
        assert not wrong.correct
        assert "Example" in p.problem  # one more case, shown; the tests stay hidden


def test_families_splits_and_problem_files(tmp_path, capsys):
    assert len(codegen.FAMILIES) >= 10
    test = {p.problem for p in codegen.generate(200, 0, "test")}
    calib = {p.problem for p in codegen.generate(200, 0, "calib")}
    assert len(test) == 200 and not test & calib
    out = tmp_path / "code.jsonl"
    assert main(["problems", "--task", "code", "--n", "24", "--split", "test", "--out", str(out)]) == 0
    problems = read_problems(out)
    assert all(p.kind == "code" and p.extra["tests"] for p in problems)
    assert len({p.extra["family"] for p in problems}) >= 8
    capsys.readouterr()
