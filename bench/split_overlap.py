"""How many problems each pair of splits of the built-in tasks shares (goal: 0 everywhere), at
the sizes the configs under docs/ draw, by ``rac.tasks.overlap`` (id, statement up to names,
numbers in the statement, skeleton). Also the distinct test statements of the code task.

    .venv/bin/python bench/split_overlap.py          # about a minute on 2 cores
"""

from __future__ import annotations

import itertools
import sys

from rac.tasks.generators import generate
from rac.tasks.overlap import shared, statement
from rac.tasks.splits import SPLITS

# the largest size the docs draw of each split (calib and test), and as many of train and val
SIZES = {"arith": {"train": 3000, "val": 500, "calib": 3000, "test": 500},
         "gsm": {"train": 1000, "val": 500, "calib": 1000, "test": 500},
         "code": {"train": 200, "val": 200, "calib": 600, "test": 200}}


def main() -> int:
    worst = 0
    print("| task | split pair | problems | shared |")
    print("|---|---|---|---|")
    for task, sizes in SIZES.items():
        made = {s: generate(task, sizes[s], 0, s) for s in SPLITS}
        for a, b in itertools.combinations(SPLITS, 2):
            pairs = shared(made[a], made[b])
            worst = max(worst, len(pairs))
            print(f"| {task} | {a} / {b} | {sizes[a]} / {sizes[b]} | {len(pairs)} |")
    test = generate("code", SIZES["code"]["test"], 0, "test")
    print(f"\ncode test split: {len({statement(p) for p in test})} distinct statements in "
          f"{len(test)} problems")
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
