"""The synthetic arithmetic reasoning task that the embedded model is trained on.

Three families, each solved step by step so that the chain of thought grows with difficulty:

- ``add``:  "Compute 23+45+12."          -> running pairwise sums, each added column by column;
- ``mul``:  "Compute 347*26."            -> one line per digit product, then running sums;
- ``word``: a short story that reduces to ``a + b*c`` or a sum of several quantities, solved by
  first writing the expression and then the same steps as above.

Every step is a small, local operation (a single-digit product with zeros appended, or the sum of
two numbers), so a model of a few hundred thousand parameters can learn it; how *many* steps there
are varies from 1 to about 13, which makes chain-of-thought length a meaningful metric.

Splits are disjoint by construction: a problem belongs to the split chosen by a hash of its
skeleton (``rac.tasks.splits``): for ``add`` and ``mul`` its text, for ``word`` the numbers and the
form of the story (not the name, items or days, which are surface).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rac.tasks.splits import digest, draw

FAMILIES = ("add", "mul", "word")

NAMES = ("Tom", "Ann", "Sam", "Mia", "Leo", "Eva", "Ben", "Zoe", "Max", "Ida")
PRONOUNS = {
    "Tom": "He", "Ann": "She", "Sam": "He", "Mia": "She", "Leo": "He",
    "Eva": "She", "Ben": "He", "Zoe": "She", "Max": "He", "Ida": "She",
}
ITEMS = ("apples", "pens", "coins", "books", "cards", "stamps", "shells", "marbles")
CONTAINERS = ("boxes", "bags", "packs", "jars", "crates")
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ACTIVITIES = (("reads", "pages"), ("walks", "steps"), ("sells", "tickets"), ("bakes", "cakes"))


@dataclass(frozen=True)
class Problem:
    problem: str
    answer: str
    solution: str  # the reference chain of thought, without the closing answer line
    family: str
    skeleton: str  # what makes it a different problem: its split is a hash of this

    @property
    def id(self) -> str:
        return "arith-" + digest(self.problem)[:12]


def _number(rng: random.Random, digits_lo: int, digits_hi: int) -> int:
    digits = rng.randint(digits_lo, digits_hi)
    return rng.randint(10 ** (digits - 1), 10**digits - 1)


def column_sum(x: int, y: int) -> str:
    """One written addition, units column first: '68+12: 8+2=10 6+1+1=8 =80'.

    Each column lists its digits and the carry, so every step is a one-digit sum; the result is
    then read off the columns in reverse.
    """
    xs, ys = str(x)[::-1], str(y)[::-1]
    columns, carry = [], 0
    for i in range(max(len(xs), len(ys))):
        digits = [d for d in (xs[i:i + 1], ys[i:i + 1]) if d] + (["1"] if carry else [])
        total = sum(map(int, digits))
        columns.append("+".join(digits) + f"={total}")
        carry = total // 10
    return f"{x}+{y}: " + " ".join(columns) + f" ={x + y}"


def sum_steps(terms: list[int]) -> tuple[list[str], int]:
    """Running pairwise sums, each written out column by column."""
    lines, total = [], terms[0]
    for term in terms[1:]:
        lines.append(column_sum(total, term))
        total += term
    return lines, total


def product_steps(a: int, b: int) -> tuple[list[str], int]:
    """Long multiplication: one line per non-zero digit pair ('40*6=240'), then the running sums."""
    lines, partials = [], []
    for b_place, b_digit in enumerate(reversed(str(b))):
        for a_place, a_digit in enumerate(reversed(str(a))):
            if a_digit == "0" or b_digit == "0":
                continue
            x, y = int(a_digit) * 10**a_place, int(b_digit) * 10**b_place
            lines.append(f"{x}*{y}={x * y}")
            partials.append(x * y)
    sums, total = sum_steps(partials)
    assert total == a * b
    return lines + sums, total


def make_add(rng: random.Random) -> Problem:
    terms = [_number(rng, 2, 3) for _ in range(rng.randint(2, 8))]
    lines, total = sum_steps(terms)
    text = "Compute " + "+".join(map(str, terms)) + "."
    return Problem(text, str(total), "\n".join(lines), "add", text)


def make_mul(rng: random.Random) -> Problem:
    a, b = _number(rng, 2, 3), _number(rng, 1, 2)
    lines, total = product_steps(a, b)
    return Problem(f"Compute {a}*{b}.", str(total), "\n".join(lines), "mul", f"Compute {a}*{b}.")


def make_word(rng: random.Random) -> Problem:
    name = rng.choice(NAMES)
    pron = PRONOUNS[name]
    if rng.random() < 0.5:
        item, box = rng.choice(ITEMS), rng.choice(CONTAINERS)
        a, n, each = _number(rng, 1, 2), rng.randint(2, 9), _number(rng, 1, 2)
        text = (f"{name} has {a} {item}. {pron} buys {n} {box} of {each} {item} each. "
                f"How many {item} does {pron.lower()} have now?")
        prod_lines, prod = product_steps(each, n)
        sum_lines, total = sum_steps([prod, a])
        lines = [f"{each}*{n}+{a}"] + prod_lines + sum_lines
        skeleton = f"word-buy:{a}:{n}:{each}"
    else:
        verb, unit = rng.choice(ACTIVITIES)
        days = rng.sample(DAYS, rng.randint(2, 5))
        counts = [_number(rng, 2, 3) for _ in days]
        parts = [f"{c} {unit} on {d}" for c, d in zip(counts, days)]
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
        text = f"{name} {verb} {listed}. How many {unit} in total?"
        sum_lines, total = sum_steps(counts)
        lines = ["+".join(map(str, counts))] + sum_lines
        skeleton = "word-days:" + ":".join(map(str, counts))
    return Problem(text, str(total), "\n".join(lines), "word", skeleton)


MAKERS = {"add": make_add, "mul": make_mul, "word": make_word}


def sample_problem(rng: random.Random, families: tuple[str, ...] = FAMILIES) -> Problem:
    return MAKERS[rng.choice(families)](rng)


def generate(n: int, seed: int, split: str, families: tuple[str, ...] = FAMILIES) -> list[Problem]:
    """``n`` distinct problems of one split, reproducible from ``seed``."""
    return draw(n, split, "arith", random.Random(f"{seed}-{split}"), families, MAKERS,
                lambda p: p.skeleton)


def completion_text(p: Problem) -> str:
    """What the model writes after the chat template's opening '<think>\\n'."""
    return f"{p.solution}\n</think>\nThe answer is \\boxed{{{p.answer}}}."
