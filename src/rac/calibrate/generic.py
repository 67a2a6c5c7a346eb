"""Number-bearing everyday prose: the embedded model's stand-in for C4.

Generic calibration text must be in the model's vocabulary and meaningful to it, yet off-task.
Web text is full of numbers (dates, prices, counts), so this corpus is too: a number-free corpus
would be a straw man. It is generated from templates, offline and reproducibly.
"""

from __future__ import annotations

import random

from rac.tasks.arith import ITEMS, NAMES, PRONOUNS

PLACES = ("the park", "the market", "the library", "the station", "the school", "the harbor",
          "the museum", "the garden", "the bakery", "the farm")
TOWNS = ("Oakford", "Riverton", "Milltown", "Ashby", "Lakeside", "Northwood")
MONTHS = ("January", "March", "May", "June", "August", "October", "December")
WEATHER = ("sunny", "rainy", "cold", "warm", "windy", "cloudy")
FOODS = ("bread", "soup", "rice", "cheese", "tea", "pie")
TEMPLATES = (
    "{name} went to {place} at {hour} in the morning and stayed for {n2} minutes.",
    "The train to {town} leaves at {hour} and takes {n2} minutes.",
    "On {day} {month} {year} the weather in {town} was {weather}.",
    "{name} paid {n2} dollars for {food} and {n1} dollars for {item}.",
    "There are {n3} people living in {town}, and {n2} of them work at {place}.",
    "{pron} said that {place} opens at {hour} and closes at {hour2}.",
    "The shop sold {n3} {item} last week and {n2} {item} this week.",
    "{name} is {n2} years old and lives near {place} in {town}.",
    "In {year} the town of {town} built a new road of {n2} miles.",
    "It was {weather} today, so {name} stayed home and read for {n1} hours.",
    "The recipe needs {n1} cups of flour, {n1b} eggs and {n3} grams of sugar.",
    "{name} and {name2} met at {place} on {month} {day}.",
    "The bus number {n2} stops at {place} every {n1} minutes.",
    "A ticket to {place} costs {n2} dollars, or {n1} dollars for children.",
    "{name} counted {n3} birds in {place} during {month}.",
    "The room on floor {n1} has {n2} chairs and {n1b} tables.",
    "Call {name} at {n3} {n3b} before {hour} in the evening.",
    "The library has {n3} {item} and lends about {n2} every day.",
    "{name} scored {n2} points in the game on {day} {month}.",
    "We drove {n3} miles to {town} and used {n2} liters of fuel.",
    "The final score on {day} {month} was {n1}:{n1b}.",
    "Rule {n1}: one box = {n2} {item}.",
    "On the board {name} wrote {n2}+{n1}={n2n1} and {n1}*{n1b}={n1n1b}.",
    "The worksheet from {place} shows \\boxed{{{n2}}} as the answer to problem {n1}.",
    "Her locker code is {{{n1}{n1b}{n2}}} and {pron_lower} never forgets it.",
)


def sentence(rng: random.Random) -> str:
    name, name2 = rng.sample(NAMES, 2)
    values = {
        "name": name, "name2": name2, "pron": PRONOUNS[name], "place": rng.choice(PLACES),
        "town": rng.choice(TOWNS), "month": rng.choice(MONTHS), "weather": rng.choice(WEATHER),
        "food": rng.choice(FOODS), "item": rng.choice(ITEMS),
        "hour": rng.randint(1, 12), "hour2": rng.randint(1, 12), "day": rng.randint(1, 28),
        "year": rng.randint(1900, 2030), "n1": rng.randint(1, 9), "n1b": rng.randint(1, 9),
        "n2": rng.randint(10, 99), "n3": rng.randint(100, 999), "n3b": rng.randint(100, 999),
    }
    values["n2n1"] = values["n2"] + values["n1"]
    values["n1n1b"] = values["n1"] * values["n1b"]
    values["pron_lower"] = values["pron"].lower()
    return rng.choice(TEMPLATES).format(**values)


def document(rng: random.Random, n_sentences: int | None = None) -> str:
    """A paragraph of 3 to 8 sentences."""
    n = n_sentences if n_sentences is not None else rng.randint(3, 8)
    return " ".join(sentence(rng) for _ in range(n))


def corpus(n_docs: int, seed: int) -> list[str]:
    rng = random.Random(f"generic-{seed}")
    return [document(rng) for _ in range(n_docs)]
