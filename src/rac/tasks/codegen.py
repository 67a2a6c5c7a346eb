"""Small programming problems with hidden tests (``rac problems --task code``), graded by the
sandbox like LiveCodeBench problems.

Twelve families, each with a parameter drawn per problem (a divisor, a character, a shift...), so
that the statements differ and a memorised answer does not pass. Ten are stdin/stdout programs, two
ask for a function (tests of the form ``{"call", "expected"}``). The hidden tests come from a
reference implementation in this module, never from running generated code, and every family
carries a reference solution that the tests check passes them. Splits are disjoint by construction:
a problem's split is a hash of its text.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from rac.tasks.splits import digest, draw

N_TESTS = 6
N_CASES = N_TESTS + 1  # the first case is the statement's example, the others are hidden


@dataclass(frozen=True)
class CodeProblem:
    problem: str
    tests: list[dict]
    solution: str  # a reference program that passes every test
    family: str
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return "code-" + digest(self.problem)[:12]


def _lines(*rows) -> str:
    return "".join(f"{r}\n" for r in rows)


def _numbers(r: random.Random, lo: int = -50, hi: int = 99) -> list[int]:
    return [r.randint(lo, hi) for _ in range(r.randint(1, 12))]


def _stdin(problem: str, solution: str, cases: list[tuple[str, str]]) -> tuple[str, list[dict], str]:
    """A stdin/stdout problem: the first case is shown as an example, the others are hidden."""
    (inp, out), hidden = cases[0], cases[1:]
    text = f"{problem}\n\nExample input:\n```\n{inp}```\nExample output:\n```\n{out}```"
    return text, [{"input": i, "output": o} for i, o in hidden], solution


def _function(problem: str, solution: str, cases: list[dict]) -> tuple[str, list[dict], str]:
    """A function problem: the first call is shown as an example, the others are hidden."""
    first, hidden = cases[0], cases[1:]
    return f"{problem}\n\nExample: {first['call']} returns {first['expected']}.", hidden, solution


def sum_divisible(r: random.Random):
    k = r.randint(2, 9)
    cases = []
    for _ in range(N_CASES):
        xs = _numbers(r)
        cases.append((_lines(len(xs), " ".join(map(str, xs))), f"{sum(x for x in xs if x % k == 0)}\n"))
    return _stdin(
        f"The first line of the input holds n, the second n integers separated by spaces. Print the "
        f"sum of those integers that are divisible by {k} (0 if there are none).",
        "n = int(input())\nxs = list(map(int, input().split()))\n"
        f"print(sum(x for x in xs if x % {k} == 0))\n",
        cases)


def count_char(r: random.Random):
    c = r.choice(string.ascii_lowercase[:8])
    cases = []
    for _ in range(N_CASES):
        s = "".join(r.choice("abcdefgh ") for _ in range(r.randint(1, 30))).strip() or "a"
        cases.append((_lines(s), f"{s.count(c)}\n"))
    return _stdin(f"Read one line of text and print how many times the letter '{c}' occurs in it.",
                  f"print(input().count('{c}'))\n", cases)


def reverse_words(r: random.Random):
    upper = r.random() < 0.5
    words = ["red", "blue", "tree", "sky", "cat", "moon", "river", "stone", "bird", "lamp"]
    cases = []
    for _ in range(N_CASES):
        ws = r.sample(words, r.randint(1, 6))
        out = " ".join(reversed(ws))
        cases.append((_lines(" ".join(ws)), (out.upper() if upper else out) + "\n"))
    extra = " in upper case" if upper else ""
    return _stdin(f"Read one line of words separated by single spaces and print the words in reverse "
                  f"order, separated by single spaces{extra}.",
                  "print(' '.join(reversed(input().split()))" + (".upper()" if upper else "") + ")\n",
                  cases)


def fizz(r: random.Random):
    a, b = r.sample([2, 3, 4, 5, 7], 2)
    wa, wb = r.sample(["Fizz", "Buzz", "Zap", "Pop", "Boom"], 2)

    def say(i: int) -> str:
        return (wa if i % a == 0 else "") + (wb if i % b == 0 else "") or str(i)

    cases = []
    for _ in range(N_CASES):
        n = r.randint(1, 25)
        cases.append((_lines(n), "".join(say(i) + "\n" for i in range(1, n + 1))))
    return _stdin(f"Read n and print the numbers 1 to n, one per line, but print '{wa}' instead of a "
                  f"multiple of {a}, '{wb}' instead of a multiple of {b}, and '{wa}{wb}' instead of "
                  f"a multiple of both.",
                  f"for i in range(1, int(input()) + 1):\n"
                  f"    print(('{wa}' if i % {a} == 0 else '') + ('{wb}' if i % {b} == 0 else '') or i)\n",
                  cases)


def second_largest(r: random.Random):
    cases = []
    for _ in range(N_CASES):
        xs = _numbers(r, -20, 40)
        xs += [r.randint(-20, 40)] * 2
        d = sorted(set(xs))
        cases.append((_lines(len(xs), " ".join(map(str, xs))), f"{d[-2] if len(d) > 1 else 'NONE'}\n"))
    return _stdin("The first line holds n, the second n integers. Print the second largest distinct "
                  "value among them, or NONE if all of them are equal.",
                  "input()\nd = sorted(set(map(int, input().split())))\n"
                  "print(d[-2] if len(d) > 1 else 'NONE')\n",
                  cases)


def prefix_sums(r: random.Random):
    cases = []
    for _ in range(N_CASES):
        xs = _numbers(r)
        acc, out = 0, []
        for x in xs:
            acc += x
            out.append(acc)
        cases.append((_lines(len(xs), " ".join(map(str, xs))), " ".join(map(str, out)) + "\n"))
    return _stdin("The first line holds n, the second n integers. Print their running sums (the "
                  "first number, the sum of the first two, and so on) on one line, separated by "
                  "spaces.",
                  "input()\nacc, out = 0, []\nfor x in map(int, input().split()):\n"
                  "    acc += x\n    out.append(acc)\nprint(*out)\n", cases)


def digit_power(r: random.Random):
    p = r.randint(2, 4)
    cases = []
    for _ in range(N_CASES):
        n = r.randint(0, 10**6)
        cases.append((_lines(n), f"{sum(int(d) ** p for d in str(n))}\n"))
    return _stdin(f"Read a non-negative integer n and print the sum of its digits each raised to the "
                  f"power {p}.", f"print(sum(int(d) ** {p} for d in input().strip()))\n", cases)


def long_words(r: random.Random):
    k = r.randint(3, 6)
    words = ["a", "an", "dog", "apple", "kite", "planet", "sun", "garden", "ox", "window", "tea"]
    cases = []
    for _ in range(N_CASES):
        ws = [r.choice(words) for _ in range(r.randint(1, 10))]
        cases.append((_lines(" ".join(ws)), f"{sum(len(w) > k for w in ws)}\n"))
    return _stdin(f"Read one line of words separated by spaces and print how many of them have more "
                  f"than {k} letters.", f"print(sum(len(w) > {k} for w in input().split()))\n", cases)


def transpose(r: random.Random):
    cases = []
    for _ in range(N_CASES):
        rows, cols = r.randint(1, 4), r.randint(1, 4)
        m = [[r.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
        inp = _lines(f"{rows} {cols}", *(" ".join(map(str, row)) for row in m))
        out = "".join(" ".join(str(m[i][j]) for i in range(rows)) + "\n" for j in range(cols))
        cases.append((inp, out))
    return _stdin("The first line holds r and c, then r lines of c integers: a matrix. Print its "
                  "transpose: c lines of r integers separated by spaces.",
                  "r, c = map(int, input().split())\nm = [input().split() for _ in range(r)]\n"
                  "for j in range(c):\n    print(' '.join(m[i][j] for i in range(r)))\n", cases)


def min_max_gap(r: random.Random):
    cases = []
    for _ in range(N_CASES):
        xs = _numbers(r)
        cases.append((_lines(len(xs), " ".join(map(str, xs))), f"{max(xs) - min(xs)}\n"))
    return _stdin("The first line holds n, the second n integers. Print the difference between the "
                  "largest and the smallest of them.",
                  "input()\nxs = list(map(int, input().split()))\nprint(max(xs) - min(xs))\n", cases)


def caesar(r: random.Random):
    k = r.randint(1, 25)

    def shift(s: str) -> str:
        return "".join(chr((ord(ch) - 97 + k) % 26 + 97) if ch.islower() else ch for ch in s)

    cases = []
    for _ in range(N_CASES):
        s = "".join(r.choice(string.ascii_lowercase + " ") for _ in range(r.randint(1, 20)))
        cases.append({"call": f"shift({s!r})", "expected": repr(shift(s))})
    return _function(
        f"Define a function shift(s) that returns s with every lowercase letter moved {k} places "
        "forward in the alphabet, wrapping around from z to a; other characters stay as they are.",
        f"def shift(s):\n    return ''.join(chr((ord(c) - 97 + {k}) % 26 + 97) if c.islower() "
        "else c for c in s)\n", cases)


def gcd_list(r: random.Random):
    import math

    cases = []
    for _ in range(N_CASES):
        g = r.randint(1, 12)
        xs = [g * r.randint(1, 20) for _ in range(r.randint(1, 6))]
        cases.append({"call": f"gcd_list({xs!r})", "expected": repr(math.gcd(*xs))})
    return _function(
        "Define a function gcd_list(nums) that returns the greatest common divisor of a non-empty "
        "list of positive integers.",
        "import math\n\ndef gcd_list(nums):\n    g = 0\n    for x in nums:\n"
        "        g = math.gcd(g, x)\n    return g\n", cases)


MAKERS: dict[str, Callable[[random.Random], tuple[str, list[dict], str]]] = {
    f.__name__: f for f in (sum_divisible, count_char, reverse_words, fizz, second_largest,
                            prefix_sums, digit_power, long_words, transpose, min_max_gap, caesar,
                            gcd_list)}
FAMILIES = tuple(MAKERS)


def _maker(family: str) -> Callable[[random.Random], CodeProblem]:
    def make(rng: random.Random) -> CodeProblem:
        text, tests, solution = MAKERS[family](rng)
        return CodeProblem(text, tests, solution, family)
    return make


def generate(n: int, seed: int, split: str, families: tuple[str, ...] = FAMILIES
             ) -> list[CodeProblem]:
    """``n`` distinct problems of one split, reproducible from ``seed``."""
    return draw(n, split, random.Random(f"code-{seed}-{split}"), families,
                {family: _maker(family) for family in MAKERS}, lambda p: p.problem)
