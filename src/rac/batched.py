"""Many requests through one backend: batched by prompt length, and journaled: completions appended
to a file as each batch ends, so that an interrupted evaluation, started again with the same
inputs, generates only the completions it lacks.

An hour-long evaluation (656 HumanEval completions at 60 tokens/s on a 2-core CPU) otherwise
starts from nothing after every interruption. Resuming is exact because every request carries its
own seed (``generate.request_seed``): a completion does not depend on the batch it ran in.

The file's first line is the identity of what is generated (model, problems, sampling, engine);
a journal of other inputs is started over, never mixed in. Every later line is one completion,
``{"i": request index, "ids": [...], "finish_reason": ...}``, written and fsynced before the next
batch starts; a line cut short by a kill is ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from rac.generate import Backend, Completion
from rac.io import atomic_write_text
from rac.sampling import Sampling


class Journal:
    def __init__(self, path: Path, identity: dict, n: int):
        """The journal at ``path`` of ``n`` requests made with ``identity``; what it holds from an
        earlier run with the same identity is in ``done``."""
        self.path, self.done = Path(path), {}
        head = json.dumps({"identity": identity}, sort_keys=True, default=str)
        lines = self.path.read_text().split("\n") if self.path.exists() else []
        if lines and lines[0] == head:
            for line in lines[1:]:
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the line a kill cut short (or the empty last one)
                    continue
                if 0 <= row["i"] < n:
                    self.done[row["i"]] = Completion(row["ids"], row["finish_reason"])
        # rewritten whole: a journal of other inputs starts over, a torn line is dropped
        atomic_write_text(self.path, head + "\n" + "".join(self._line(i, c) for i, c in self.done.items()))

    @staticmethod
    def _line(i: int, c: Completion) -> str:
        return json.dumps({"i": i, "ids": c.ids, "finish_reason": c.finish_reason}) + "\n"

    def add(self, batch: Iterable[tuple[int, Completion]]) -> None:
        with self.path.open("a") as f:
            f.write("".join(self._line(i, c) for i, c in batch))
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def generate_all(backend: Backend, prompts: list[list[int]], sampling: Sampling, seeds: list[int],
                 batch_size: int, desc: str = "generate", progress: bool = True,
                 journal: Journal | None = None) -> list[Completion]:
    """Generate for every prompt (``seeds[i]``: prompt ``i``'s), batched by similar length; with a
    ``Journal``, only the prompts it lacks, each batch added to it as it ends."""
    out: list[Completion | None] = [journal.done.get(i) if journal else None for i in range(len(prompts))]
    order = sorted((i for i, c in enumerate(out) if c is None), key=lambda i: (len(prompts[i]), i))
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(order), desc=desc, unit="seq",
               leave=False, disable=not progress)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = list(zip(idx, backend.generate([prompts[i] for i in idx], sampling,
                                               [seeds[i] for i in idx])))
        for i, c in batch:
            out[i] = c
        if journal:
            journal.add(batch)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
