"""Which held-out problems the embedded model's training run draws: replays ``rac toy train``'s
data stream (every example of every step, as the trainer draws them) and counts the problems of
the val, calib and test splits that occur in it, up to names (``rac.tasks.overlap``). Goal: 0.

    .venv/bin/python bench/training_overlap.py        # about 1 minute (307k problems)
"""

from __future__ import annotations

import sys

from rac.tasks.generators import generate
from rac.tasks.overlap import shared
from rac.tasks.problems import Problem
from rac.toy.train import TrainConfig, training_problems

SIZES = {"val": 500, "calib": 3000, "test": 500}  # the largest the docs draw


def main() -> int:
    seen = {p.skeleton: p for p in training_problems(TrainConfig())}
    trained = [Problem(f"train-{i}", p.problem, p.answer, {"family": p.family})
               for i, p in enumerate(seen.values())]
    print(f"{len(trained)} distinct training problems (by skeleton)")
    worst = 0
    for split, n in SIZES.items():
        held = [Problem(p.id, p.problem, p.answer, {"family": p.extra["family"]})
                for p in generate("arith", n, 0, split)]
        hit = {x for x, _, _ in shared(held, trained)}
        worst = max(worst, len(hit))
        print(f"{split} ({n} problems): {len(hit)} occur in training, up to names")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
