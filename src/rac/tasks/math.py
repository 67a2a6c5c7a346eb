"""Math grading: the last ``\\boxed{...}`` after ``</think>``, checked with math-verify.

Policy, chosen deliberately (see README, "Grading"):

- Only the text after the *last* ``</think>`` is graded. A chain of thought is full of numbers and
  math-verify's default extraction falls back to any expression in the text, so grading the whole
  completion would credit a model for a number it merely computed along the way. A completion that
  never closes its thinking (typically one that hit the token limit) has no answer.
- The answer must be boxed. An unboxed final number does not count: R1 models are instructed to
  box, MATH-500 graders look for the box first, and crediting bare numbers would reward a rambling
  model that happens to end on the right value.
- math-verify then compares the boxed content with the gold answer symbolically (``5,776`` equals
  ``5776``, ``\\frac12`` equals ``0.5``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from math_verify import LatexExtractionConfig, parse, verify

from rac.models import THINK_CLOSE

BOXED = "\\boxed{"


@dataclass(frozen=True)
class Grade:
    correct: bool
    extracted: str | None  # the boxed content, or None
    reason: str  # "correct", "wrong", "no_think_close", "no_boxed", "unparsable"


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` (nested braces allowed), else None."""
    start = text.rfind(BOXED)
    while start != -1:
        depth, i = 1, start + len(BOXED)
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            return text[start + len(BOXED):i - 1]
        start = text.rfind(BOXED, 0, start)
    return None


def answer_section(completion: str, thinking: bool = True) -> str | None:
    """The part of a completion that may hold the answer: after the last ``</think>``, or all of
    it for a model without a think phase."""
    if not thinking:
        return completion
    end = completion.rfind(THINK_CLOSE)
    return None if end == -1 else completion[end + len(THINK_CLOSE):]


def _timeout() -> int | None:
    # math-verify times out with signal.alarm, which only works on the main thread.
    return 5 if threading.current_thread() is threading.main_thread() else None


def grade_math(completion: str, gold: str, thinking: bool = True) -> Grade:
    section = answer_section(completion, thinking)
    if section is None:
        return Grade(False, None, "no_think_close")
    boxed = last_boxed(section)
    if boxed is None:
        return Grade(False, None, "no_boxed")
    timeout = _timeout()
    config = [LatexExtractionConfig(boxed_match_priority=0)]
    pred = parse(BOXED + boxed + "}", extraction_config=config, parsing_timeout=timeout)
    if not pred:
        return Grade(False, boxed, "unparsable")
    gold_parsed = parse(f"${gold}$", parsing_timeout=timeout) or parse(gold, parsing_timeout=timeout)
    ok = bool(verify(gold_parsed, pred, timeout_seconds=timeout))
    return Grade(ok, boxed, "correct" if ok else "wrong")
