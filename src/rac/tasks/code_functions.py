"""The code task's function families: the statement asks for a function, tests are
``{"call", "expected"}`` (``rac.tasks.codegen`` draws the statement parameters; the random
generator only draws the example and hidden calls)."""

from __future__ import annotations

import math
import random
import string
from collections.abc import Callable

from rac.tasks.code_stdin import N_CASES, Built, params


def function_problem(problem: str, solution: str, calls: list[tuple[str, object]]) -> Built:
    """A function problem: the first call is shown as an example, the others are hidden."""
    (call, value), hidden = calls[0], calls[1:]
    return (f"{problem}\n\nExample: {call} returns {value!r}.",
            [{"call": c, "expected": repr(v)} for c, v in hidden], solution)


def caesar(r: random.Random, k: int, upper_too: bool) -> Built:
    def shift(s: str) -> str:
        out = []
        for ch in s:
            base = 97 if ch.islower() else 65 if upper_too and ch.isupper() else None
            out.append(ch if base is None else chr((ord(ch) - base + k) % 26 + base))
        return "".join(out)

    calls = []
    for _ in range(N_CASES):
        s = "".join(r.choice(string.ascii_letters + " .") for _ in range(r.randint(1, 20)))
        calls.append((f"shift({s!r})", shift(s)))
    which = "letter (lower or upper case, keeping its case)" if upper_too else "lowercase letter"
    others = "" if upper_too else " (upper case letters included)"
    code = ["def shift(s):", "    out = []", "    for c in s:", "        if c.islower():",
            f"            out.append(chr((ord(c) - 97 + {k}) % 26 + 97))"]
    if upper_too:
        code += ["        elif c.isupper():", f"            out.append(chr((ord(c) - 65 + {k}) % 26 + 65))"]
    code += ["        else:", "            out.append(c)", "    return ''.join(out)"]
    return function_problem(
        f"Define a function shift(s) that returns s with every {which} moved {k} places forward "
        f"in the alphabet, wrapping around from z to a; other characters{others} stay as they are.",
        "\n".join(code) + "\n",
        calls)


def gcd_list(r: random.Random, op: str) -> Built:
    fn = math.gcd if op == "gcd" else math.lcm
    calls = []
    for _ in range(N_CASES):
        g = r.randint(1, 12)
        xs = [g * r.randint(1, 20) for _ in range(r.randint(1, 6))] if op == "gcd" else \
            [r.randint(1, 15) for _ in range(r.randint(1, 5))]
        calls.append((f"{op}_list({xs!r})", fn(*xs)))
    what = "greatest common divisor" if op == "gcd" else "least common multiple"
    return function_problem(
        f"Define a function {op}_list(nums) that returns the {what} of a non-empty list of "
        "positive integers.",
        f"import math\n\ndef {op}_list(nums):\n    return math.{op}(*nums)\n", calls)


def replace_letter(r: random.Random, a: str, b: str) -> Built:
    calls = []
    for _ in range(N_CASES):
        s = "".join(r.choice("abcdef ") for _ in range(r.randint(1, 16)))
        calls.append((f"replace_letter({s!r})", s.replace(a, b)))
    return function_problem(
        f"Define a function replace_letter(s) that returns s with every '{a}' replaced by '{b}'.",
        f"def replace_letter(s):\n    return s.replace({a!r}, {b!r})\n", calls)


def affine(r: random.Random, m: int, c: int) -> Built:
    calls = []
    for _ in range(N_CASES):
        xs = [r.randint(-20, 20) for _ in range(r.randint(0, 6))]
        calls.append((f"affine({xs!r})", [m * x + c for x in xs]))
    then = "" if c == 0 else f" and then {'increased' if c > 0 else 'decreased'} by {abs(c)}"
    return function_problem(
        f"Define a function affine(nums) that returns a new list holding each integer of nums "
        f"multiplied by {m}{then}, in the same order.",
        f"def affine(nums):\n    return [{m} * x + ({c}) for x in nums]\n", calls)


def count_multiples(r: random.Random, k: int, j: int) -> Built:
    calls = []
    for _ in range(N_CASES):
        n = r.randint(1, 200)
        calls.append((f"count_multiples({n})", sum(i % k == 0 or i % j == 0 for i in range(1, n + 1))))
    return function_problem(
        f"Define a function count_multiples(n) that returns how many of the integers 1 to n are "
        f"divisible by {k} or by {j} (or both).",
        "def count_multiples(n):\n"
        f"    return sum(i % {k} == 0 or i % {j} == 0 for i in range(1, n + 1))\n", calls)


def strip_letters(r: random.Random, a: str, b: str) -> Built:
    calls = []
    for _ in range(N_CASES):
        s = "".join(r.choice("abcdefgh") for _ in range(r.randint(0, 16)))
        calls.append((f"strip_letters({s!r})", s.replace(a, "").replace(b, "")))
    return function_problem(
        f"Define a function strip_letters(s) that returns s with every '{a}' and every '{b}' "
        "removed.",
        f"def strip_letters(s):\n    return s.replace({a!r}, '').replace({b!r}, '')\n", calls)


LETTER_PAIRS = tuple((a, b) for a in "abcdefgh" for b in "abcdefgh" if a < b)
FAMILIES: dict[str, tuple[Callable[..., Built], tuple[tuple, ...]]] = {
    "caesar": (caesar, params(range(1, 26), (False, True))),
    "gcd_list": (gcd_list, params(("gcd", "lcm"))),
    "replace_letter": (replace_letter, tuple((a, b) for a in "abcdef" for b in "abcdef" if a != b)),
    "affine": (affine, params(range(2, 7), range(-3, 4))),
    "count_multiples": (count_multiples, tuple((k, j) for k in range(2, 10) for j in range(2, 10)
                                              if k < j and j % k)),
    "strip_letters": (strip_letters, LETTER_PAIRS),
}
