from __future__ import annotations

import threading

from rac.tasks.math import grade_math, last_boxed


def test_correct_wrong_missing_and_malformed():
    assert grade_math("x\n</think>\nThe answer is \\boxed{80}.", "80").correct
    assert grade_math("x\n</think>\n\\boxed{5,776}", "5776").correct
    assert grade_math("</think>\\boxed{\\frac{1}{2}}", "0.5").correct
    g = grade_math("x\n</think>\nThe answer is \\boxed{81}.", "80")
    assert (g.correct, g.extracted, g.reason) == (False, "81", "wrong")
    assert grade_math("x\n</think>\nThe answer is 80.", "80").reason == "no_boxed"
    assert grade_math("x\n</think>\nThe answer is \\boxed{80", "80").reason == "no_boxed"
    assert grade_math("x\n</think>\n\\boxed{}", "80").reason == "unparsable"


def test_only_the_text_after_think_counts():
    # The right number inside the chain of thought, never closed: no answer.
    g = grade_math("68+12=80 \\boxed{80} and on and on", "80")
    assert (g.correct, g.reason) == (False, "no_think_close")
    # A boxed value in the thinking does not leak into the answer section.
    assert grade_math("\\boxed{80}\n</think>\nThe answer is \\boxed{79}.", "80").reason == "wrong"


def test_last_boxed_wins_and_nested_braces_survive():
    assert last_boxed("\\boxed{1} then \\boxed{\\frac{2}{3}}") == "\\frac{2}{3}"
    assert last_boxed("\\boxed{7} then \\boxed{8") == "7"
    assert last_boxed("nothing") is None


def test_grading_works_off_the_main_thread():
    out = []
    t = threading.Thread(target=lambda: out.append(grade_math("</think>\\boxed{12}", "12")))
    t.start()
    t.join()
    assert out[0].correct
