"""The code task's stdin/stdout families: each builds a problem from a random generator and its
statement parameters (``rac.tasks.codegen`` draws the parameters; the random generator only
draws the example and hidden inputs, which are surface)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable

N_TESTS = 6
N_CASES = N_TESTS + 1  # the first case is the statement's example, the others are hidden
Built = tuple[str, list[dict], str]  # statement, hidden tests, reference solution


def lines(*rows: object) -> str:
    return "".join(f"{r}\n" for r in rows)


def numbers(r: random.Random, lo: int = -50, hi: int = 99) -> list[int]:
    return [r.randint(lo, hi) for _ in range(r.randint(1, 12))]


def stdin_problem(problem: str, solution: str, cases: list[tuple[str, str]]) -> Built:
    """A stdin/stdout problem: the first case is shown as an example, the others are hidden."""
    (inp, out), hidden = cases[0], cases[1:]
    text = f"{problem}\n\nExample input:\n```\n{inp}```\nExample output:\n```\n{out}```"
    return text, [{"input": i, "output": o} for i, o in hidden], solution


def list_cases(r: random.Random, answer: Callable[[list[int]], str], lo: int = -50, hi: int = 99
               ) -> list[tuple[str, str]]:
    """Cases whose input is n, then n integers on one line."""
    out = []
    for _ in range(N_CASES):
        xs = numbers(r, lo, hi)
        out.append((lines(len(xs), " ".join(map(str, xs))), answer(xs)))
    return out


READ_LIST = "input()\nxs = list(map(int, input().split()))\n"
LIST_INPUT = "The first line of the input holds n, the second n integers separated by spaces."


def sum_divisible(r: random.Random, k: int, negate: bool) -> Built:
    def keep(x: int) -> bool:
        return (x % k == 0) != negate

    no = " not" if negate else ""
    return stdin_problem(
        f"{LIST_INPUT} Print the sum of those integers that are{no} divisible by {k} (0 if there "
        "are none).",
        READ_LIST + f"print(sum(x for x in xs if (x % {k} == 0) != {negate}))\n",
        list_cases(r, lambda xs: f"{sum(x for x in xs if keep(x))}\n"))


def count_char(r: random.Random, c: str, words: bool) -> Built:
    cases = []
    for _ in range(N_CASES):
        s = " ".join("".join(r.choice("abcdefgh") for _ in range(r.randint(1, 6)))
                     for _ in range(r.randint(1, 6)))
        n = sum(c in w for w in s.split()) if words else s.count(c)
        cases.append((lines(s), f"{n}\n"))
    if words:
        return stdin_problem(
            f"Read one line of words separated by single spaces and print how many of the words "
            f"contain the letter '{c}'.", f"print(sum('{c}' in w for w in input().split()))\n", cases)
    return stdin_problem(f"Read one line of text and print how many times the letter '{c}' occurs "
                         "in it.", f"print(input().count('{c}'))\n", cases)


SEPARATORS = {" ": "single spaces", ",": "commas", "-": "hyphens"}


def reverse_words(r: random.Random, upper: bool, sep: str) -> Built:
    words = ["red", "blue", "tree", "sky", "cat", "moon", "river", "stone", "bird", "lamp"]
    cases = []
    for _ in range(N_CASES):
        ws = r.sample(words, r.randint(1, 6))
        out = sep.join(reversed(ws))
        cases.append((lines(" ".join(ws)), (out.upper() if upper else out) + "\n"))
    case = " in upper case" if upper else ""
    return stdin_problem(
        f"Read one line of words separated by single spaces and print the words in reverse order, "
        f"separated by {SEPARATORS[sep]}{case}.",
        f"print({sep!r}.join(reversed(input().split()))" + (".upper()" if upper else "") + ")\n",
        cases)


def fizz(r: random.Random, a: int, b: int, wa: str, wb: str) -> Built:
    def say(i: int) -> str:
        return (wa if i % a == 0 else "") + (wb if i % b == 0 else "") or str(i)

    cases = [(lines(n), "".join(say(i) + "\n" for i in range(1, n + 1)))
             for n in (r.randint(1, 25) for _ in range(N_CASES))]
    return stdin_problem(
        f"Read n and print the numbers 1 to n, one per line, but print '{wa}' instead of a "
        f"multiple of {a}, '{wb}' instead of a multiple of {b}, and '{wa}{wb}' instead of a "
        f"multiple of both.",
        f"for i in range(1, int(input()) + 1):\n"
        f"    print(('{wa}' if i % {a} == 0 else '') + ('{wb}' if i % {b} == 0 else '') or i)\n",
        cases)


def kth_largest(r: random.Random, k: int, distinct: bool) -> Built:
    def answer(xs: list[int]) -> str:
        d = sorted(set(xs) if distinct else xs, reverse=True)
        return f"{d[k - 1] if len(d) >= k else 'NONE'}\n"

    nth = {2: "2nd", 3: "3rd"}.get(k, f"{k}th")
    what = (f"the {nth} largest distinct value among them (equal values count once)" if distinct
            else f"the {nth} value of the list sorted from largest to smallest (equal values "
            "count separately)")
    pool = "set(xs)" if distinct else "xs"
    return stdin_problem(
        f"{LIST_INPUT} Print {what}, or NONE if there is no such value.",
        READ_LIST + f"d = sorted({pool}, reverse=True)\nprint(d[{k - 1}] if len(d) >= {k} else 'NONE')\n",
        list_cases(r, answer, -5, 8))


RUNNING = {"sums": ("sum", "sum"), "maxima": ("largest value", "max"),
           "minima": ("smallest value", "min")}


def running(r: random.Random, op: str, one_line: bool) -> Built:
    noun, fn = RUNNING[op]
    agg = {"sum": sum, "max": max, "min": min}[fn]
    layout = "on one line, separated by spaces" if one_line else "one per line"
    end = " " if one_line else "\n"
    return stdin_problem(
        f"{LIST_INPUT} Print their running {op} {layout}: for each position, the {noun} of the "
        "integers up to and including it.",
        READ_LIST + f"print(*({fn}(xs[:i + 1]) for i in range(len(xs))), sep={end!r})\n",
        list_cases(r, lambda xs: end.join(str(agg(xs[:i + 1])) for i in range(len(xs))) + "\n"))


def digit_power(r: random.Random, p: int, odd_only: bool) -> Built:
    which = "odd digits" if odd_only else "digits"
    keep = "if int(d) % 2" if odd_only else ""
    cases = []
    for _ in range(N_CASES):
        n = r.randint(0, 10**6)
        ds = [int(d) for d in str(n) if not odd_only or int(d) % 2]
        cases.append((lines(n), f"{sum(d ** p for d in ds)}\n"))
    return stdin_problem(
        f"Read a non-negative integer n and print the sum of its {which}, each raised to the "
        f"power {p} (0 if there are none).",
        f"print(sum(int(d) ** {p} for d in input().strip() {keep}))\n", cases)


def long_words(r: random.Random, k: int, at_most: bool) -> Built:
    words = ["a", "an", "dog", "apple", "kite", "planet", "sun", "garden", "ox", "window", "tea"]
    cmp = "<=" if at_most else ">"
    cases = []
    for _ in range(N_CASES):
        ws = [r.choice(words) for _ in range(r.randint(1, 10))]
        cases.append((lines(" ".join(ws)), f"{sum((len(w) <= k) == at_most for w in ws)}\n"))
    return stdin_problem(
        f"Read one line of words separated by spaces and print how many of them have "
        f"{'at most' if at_most else 'more than'} {k} letters.",
        f"print(sum(len(w) {cmp} {k} for w in input().split()))\n", cases)


MATRIX = {
    "transpose": ("its transpose: c lines of r integers",
                  "for j in range(c):\n    print(*(m[i][j] for i in range(r)))\n",
                  lambda m: [list(col) for col in zip(*m)]),
    "flip": ("its rows in reverse order (the last row first)",
             "for row in reversed(m):\n    print(*row)\n", lambda m: m[::-1]),
    "mirror": ("each row with its integers in reverse order",
               "for row in m:\n    print(*reversed(row))\n", lambda m: [row[::-1] for row in m]),
    "rotate": ("the matrix turned a quarter turn clockwise: c lines of r integers",
               "for j in range(c):\n    print(*(m[i][j] for i in reversed(range(r))))\n",
               lambda m: [list(col)[::-1] for col in zip(*m)]),
}


def matrix(r: random.Random, op: str) -> Built:
    what, body, fn = MATRIX[op]
    cases = []
    for _ in range(N_CASES):
        rows, cols = r.randint(1, 4), r.randint(1, 4)
        m = [[r.randint(0, 9) for _ in range(cols)] for _ in range(rows)]
        inp = lines(f"{rows} {cols}", *(" ".join(map(str, row)) for row in m))
        cases.append((inp, "".join(" ".join(map(str, row)) + "\n" for row in fn(m))))
    return stdin_problem(
        "The first line holds r and c, then r lines of c integers separated by spaces: a matrix. "
        f"Print {what}, each row on one line with its integers separated by spaces.",
        "r, c = map(int, input().split())\nm = [input().split() for _ in range(r)]\n" + body, cases)


MIN_MAX = {"difference": ("difference between the largest and the smallest", "-"),
           "sum": ("sum of the largest and the smallest", "+"),
           "product": ("product of the largest and the smallest", "*")}


def min_max(r: random.Random, stat: str) -> Built:
    what, op = MIN_MAX[stat]
    ops = {"-": lambda a, b: a - b, "+": lambda a, b: a + b, "*": lambda a, b: a * b}
    return stdin_problem(f"{LIST_INPUT} Print the {what} of them.",
                         READ_LIST + f"print(max(xs) {op} min(xs))\n",
                         list_cases(r, lambda xs: f"{ops[op](max(xs), min(xs))}\n"))


def count_range(r: random.Random, lo: int, width: int) -> Built:
    hi = lo + width
    return stdin_problem(f"{LIST_INPUT} Print how many of them lie between {lo} and {hi}, both "
                         "included.", READ_LIST + f"print(sum({lo} <= x <= {hi} for x in xs))\n",
                         list_cases(r, lambda xs: f"{sum(lo <= x <= hi for x in xs)}\n", -30, 70))


def clamp(r: random.Random, lo: int, span: int) -> Built:
    hi = lo + span
    return stdin_problem(
        f"{LIST_INPUT} Print the integers on one line, separated by spaces, with every integer "
        f"below {lo} replaced by {lo} and every integer above {hi} replaced by {hi}.",
        READ_LIST + f"print(*(min(max(x, {lo}), {hi}) for x in xs))\n",
        list_cases(r, lambda xs: " ".join(str(min(max(x, lo), hi)) for x in xs) + "\n", -40, 60))


def rotate_list(r: random.Random, left: bool, k: int) -> Built:
    def rot(xs: list[int]) -> list[int]:
        s = k % len(xs) if left else -k % len(xs)
        return xs[s:] + xs[:s]

    side = "left (the first integer moves to the end)" if left else \
        "right (the last integer moves to the front)"
    shift = f"{k} % len(xs)" if left else f"-{k} % len(xs)"
    return stdin_problem(
        f"{LIST_INPUT} Rotate the list {k} place{'s' if k > 1 else ''} to the {side} and print it "
        "on one line, separated by spaces.",
        READ_LIST + f"s = {shift}\nprint(*(xs[s:] + xs[:s]))\n",
        list_cases(r, lambda xs: " ".join(map(str, rot(xs))) + "\n"))


def threshold_sum(r: random.Random, t: int, greater: bool) -> Built:
    cmp = ">" if greater else "<"
    return stdin_problem(
        f"{LIST_INPUT} Print the sum of those integers that are {'greater' if greater else 'less'} "
        f"than {t} (0 if there are none).",
        READ_LIST + f"print(sum(x for x in xs if x {cmp} {t}))\n",
        list_cases(r, lambda xs: f"{sum(x for x in xs if (x > t if greater else x < t))}\n"))


def triangle(r: random.Random, ch: str, growing: bool) -> Built:
    def rows(n: int) -> range:
        return range(1, n + 1) if growing else range(n, 0, -1)

    cases = [(lines(n), "".join(ch * i + "\n" for i in rows(n)))
             for n in (r.randint(1, 12) for _ in range(N_CASES))]
    order = "line i holds i" if growing else "line i holds n - i + 1"
    span = "range(1, n + 1)" if growing else "range(n, 0, -1)"
    return stdin_problem(
        f"Read n and print a triangle of n lines: for i from 1 to n, {order} copies of the "
        f"character '{ch}' and nothing else.",
        f"n = int(input())\nfor i in {span}:\n    print({ch!r} * i)\n", cases)


def params(*axes: Iterable) -> tuple[tuple, ...]:
    """Every combination of the axes' values, in order."""
    out: list[tuple] = [()]
    for axis in axes:
        out = [p + (v,) for p in out for v in axis]
    return tuple(out)


PAIRS = tuple((a, b) for a in (2, 3, 4, 5, 7) for b in (2, 3, 4, 5, 7) if a < b)
WORD_PAIRS = tuple((x, y) for x in ("Fizz", "Buzz", "Zap") for y in ("Fizz", "Buzz", "Zap") if x != y)
FAMILIES: dict[str, tuple[Callable[..., Built], tuple[tuple, ...]]] = {
    "sum_divisible": (sum_divisible, params(range(2, 10), (False, True))),
    "count_char": (count_char, params("abcdefgh", (False, True))),
    "reverse_words": (reverse_words, params((False, True), tuple(SEPARATORS))),
    "fizz": (fizz, tuple(p + w for p in PAIRS for w in WORD_PAIRS)),
    "kth_largest": (kth_largest, params((2, 3, 4), (True, False))),
    "running": (running, params(tuple(RUNNING), (True, False))),
    "digit_power": (digit_power, params(range(1, 6), (False, True))),
    "long_words": (long_words, params(range(2, 8), (False, True))),
    "matrix": (matrix, params(tuple(MATRIX))),
    "min_max": (min_max, params(tuple(MIN_MAX))),
    "count_range": (count_range, params((-10, -5, 0, 5, 10), (10, 20, 30, 50))),
    "clamp": (clamp, params((-10, -5, 0, 5), (10, 20, 30))),
    "rotate_list": (rotate_list, params((True, False), range(1, 6))),
    "threshold_sum": (threshold_sum, params(range(-20, 41, 5), (True, False))),
    "triangle": (triangle, params("*#+@", (True, False))),
}
