"""Multi-step word problems in the style of GSM8K, for real instruction models.

Ten templated families, each needing two to five dependent steps (products, sums, differences,
an exact division); numbers are drawn per problem so that every answer is a whole number, and a
reference solution spells out the steps. Splits are disjoint by construction: a problem's split is
a hash of its skeleton, the family and its numbers, so two problems that differ only in a name
are the same problem and land in the same split (``rac.tasks.splits``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from rac.tasks.arith import NAMES, PRONOUNS
from rac.tasks.splits import digest, draw


@dataclass(frozen=True)
class WordProblem:
    problem: str
    answer: str
    solution: str
    family: str
    skeleton: str  # family and numbers: its split is a hash of this (names are surface)

    @property
    def id(self) -> str:
        return "gsm-" + digest(self.problem)[:12]


def _change(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    name = r.choice(NAMES)
    a, b, c, d = r.randint(2, 9), r.randint(3, 15), r.randint(2, 8), r.randint(2, 6)
    cost = a * c + b * d
    bill = r.choice([x for x in (50, 100, 200) if x > cost])
    return (f"A shop sells pencils for ${a} each and notebooks for ${b} each. {name} buys {c} "
            f"pencils and {d} notebooks and pays with a ${bill} bill. How many dollars of change "
            f"does {PRONOUNS[name].lower()} get?",
            bill - cost,
            f"Pencils cost {c} * {a} = {a * c} dollars. Notebooks cost {d} * {b} = {b * d} dollars. "
            f"Together {a * c} + {b * d} = {cost} dollars. The change is {bill} - {cost} = "
            f"{bill - cost} dollars.",
            (a, b, c, d, bill))


def _cookies(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    a, b = r.randint(3, 9), r.randint(6, 24)
    total = a * b
    c = r.randrange(total % 2, total // 2, 2)  # the rest is even, so half of it is whole
    rest = total - c
    return (f"A baker makes {a} trays of {b} cookies. She sells {c} cookies in the morning and "
            "half of the remaining cookies in the afternoon. How many cookies are left?",
            rest // 2,
            f"She makes {a} * {b} = {total} cookies. After the morning {total} - {c} = {rest} are "
            f"left. She sells half of them, {rest} / 2 = {rest // 2}, so {rest // 2} are left.",
            (a, b, c))


def _savings(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    name = r.choice(NAMES)
    a, b = r.randint(5, 30), r.randint(4, 12)
    saved = a * b
    c = r.randrange(saved % 3, saved - 3, 3)
    left = saved - c
    he = PRONOUNS[name]
    their = "his" if he == "He" else "her"
    return (f"{name} saves ${a} every week for {b} weeks. {he} then spends ${c} on a bike and gives "
            f"a third of the money left to {their} sister. How many dollars does {name} have now?",
            left - left // 3,
            f"{name} saves {a} * {b} = {saved} dollars. After the bike {saved} - {c} = {left} "
            f"dollars are left. A third is {left} / 3 = {left // 3}, so {name} keeps {left} - "
            f"{left // 3} = {left - left // 3} dollars.",
            (a, b, c))


def _legs(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    a, b, c = r.randint(3, 25), r.randint(5, 40), r.randint(2, 15)
    return (f"A farm has {a} cows and {b} chickens. The farmer buys {c} more chickens. How many "
            "legs do the cows and chickens have in total?",
            4 * a + 2 * (b + c),
            f"The cows have {a} * 4 = {4 * a} legs. There are now {b} + {c} = {b + c} chickens with "
            f"{b + c} * 2 = {2 * (b + c)} legs. In total {4 * a} + {2 * (b + c)} = "
            f"{4 * a + 2 * (b + c)} legs.",
            (a, b, c))


def _pages(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    name = r.choice(NAMES)
    b, c, d = r.randint(8, 30), r.randint(3, 9), r.randint(5, 40)
    read = b * c + d
    total = read + r.randint(10, 200)
    return (f"A book has {total} pages. {name} reads {b} pages a day for {c} days and then {d} "
            f"pages on the next day. How many pages are still left to read?",
            total - read,
            f"In {c} days {name} reads {b} * {c} = {b * c} pages, then {d} more: {b * c} + {d} = "
            f"{read} pages. Left: {total} - {read} = {total - read} pages.",
            (total, b, c, d))


def _trip(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    a, b, c, d = r.randint(40, 90), r.randint(2, 5), r.randint(30, 70), r.randint(1, 4)
    done = a * b + c * d
    trip = done + r.randint(10, 300)
    return (f"A car drives at {a} km per hour for {b} hours, then at {c} km per hour for {d} hours. "
            f"The whole trip is {trip} km long. How many km are left?",
            trip - done,
            f"First {a} * {b} = {a * b} km, then {c} * {d} = {c * d} km, together {a * b} + "
            f"{c * d} = {done} km. Left: {trip} - {done} = {trip - done} km.",
            (a, b, c, d, trip))


def _teams(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    a, b, d = r.randint(3, 8), r.randint(18, 32), r.choice([3, 4, 5, 6])
    total = a * b
    c = r.randint(1, 9)
    while (total - c) % d:
        c += 1
    return (f"A school has {a} classes with {b} students each. {c} students are absent. The "
            f"students who are present form teams of {d}. How many teams are there?",
            (total - c) // d,
            f"There are {a} * {b} = {total} students, {total} - {c} = {total - c} present. "
            f"Teams: {total - c} / {d} = {(total - c) // d}.",
            (a, b, c, d))


def _apples(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    a, b, e = r.randint(12, 30), r.randint(3, 9), r.choice([4, 5, 6, 8])
    total = a * b
    c, d = r.randint(5, total // 3), r.randint(1, 9)
    while (total - c - d) % e:
        d += 1
    rest = total - c - d
    return (f"A box holds {a} apples. A shop receives {b} boxes, sells {c} apples and throws away "
            f"{d} rotten ones. It packs the rest into bags of {e}. How many bags does it fill?",
            rest // e,
            f"The shop gets {a} * {b} = {total} apples. After selling and throwing away "
            f"{total} - {c} - {d} = {rest} are left, which fill {rest} / {e} = {rest // e} bags.",
            (a, b, c, d, e))


def _wages(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    name = r.choice(NAMES)
    a, b, c = r.randint(8, 25), r.randint(3, 8), r.randint(2, 6)
    week, sat = 5 * b * a, c * 2 * a
    return (f"{name} earns ${a} an hour. {PRONOUNS[name]} works {b} hours on each of the 5 weekdays "
            f"and {c} hours on Saturday, when the pay is doubled. How many dollars does {name} earn "
            "in the week?",
            week + sat,
            f"Weekdays: 5 * {b} = {5 * b} hours at {a} dollars, {5 * b} * {a} = {week} dollars. "
            f"Saturday pays 2 * {a} = {2 * a} dollars an hour: {c} * {2 * a} = {sat} dollars. "
            f"Total {week} + {sat} = {week + sat} dollars.",
            (a, b, c))


def _marbles(r: random.Random) -> tuple[str, int, str, tuple[int, ...]]:
    x, y = r.sample(NAMES, 2)
    a = r.randint(10, 60)
    b = r.randint(2, 4)
    c = r.randint(3, 20)
    y_has = b * a - c
    return (f"{x} has {a} marbles. {y} has {c} fewer than {b} times as many as {x}. How many "
            f"marbles do they have together?",
            a + y_has,
            f"{b} times {x}'s marbles is {b} * {a} = {b * a}; {y} has {b * a} - {c} = {y_has}. "
            f"Together {a} + {y_has} = {a + y_has}.",
            (a, b, c))


MAKERS: dict[str, Callable[[random.Random], tuple[str, int, str, tuple[int, ...]]]] = {
    "change": _change, "cookies": _cookies, "savings": _savings, "legs": _legs,
    "pages": _pages, "trip": _trip, "teams": _teams, "apples": _apples, "wages": _wages,
    "marbles": _marbles}
FAMILIES = tuple(MAKERS)


def _maker(family: str) -> Callable[[random.Random], WordProblem]:
    def make(rng: random.Random) -> WordProblem:
        text, answer, solution, numbers = MAKERS[family](rng)
        return WordProblem(text, str(answer), solution, family,
                           f"{family}:" + ":".join(map(str, numbers)))
    return make


def generate(n: int, seed: int, split: str, families: tuple[str, ...] = FAMILIES
             ) -> list[WordProblem]:
    """``n`` distinct problems of one split, reproducible from ``seed``."""
    return draw(n, split, "gsm", random.Random(f"gsm-{seed}-{split}"), families,
                {family: _maker(family) for family in MAKERS}, lambda p: p.skeleton)
