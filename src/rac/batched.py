"""Many requests through one backend: batched by prompt length, and journaled: completions appended
to a file as each batch ends, so that an interrupted evaluation, started again with the same
inputs, generates only the completions it lacks.

An hour-long evaluation (656 HumanEval completions at 60 tokens/s on a 2-core CPU) otherwise
starts from nothing after every interruption. Resuming is exact because every request carries its
own seed (``generate.request_seed``): a completion does not depend on the batch it ran in.

The file's first line is the identity of what is generated (model, problems, sampling, engine);
a journal of other inputs is started over, never mixed in. Every later line is one completion,
``{"i": request index, "ids": [...], "finish_reason": ..., "s": its share of its batch's
seconds}``, written and fsynced before the next batch starts; a line cut short by a kill is
ignored. The seconds let a resumed evaluation report the generation time of all its completions,
so that its time compares with an uninterrupted one's. A lock file beside the journal keeps a
second process from writing into it.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from rac.generate import Backend, Completion
from rac.io import RacError, atomic_write_text
from rac.sampling import Sampling


class Journal:
    def __init__(self, path: Path, identity: dict, n: int):
        """The journal at ``path`` of ``n`` requests made with ``identity``, held by this process
        alone (a second one is refused: its completions would go under this one's identity);
        what it holds from an earlier run with the same identity is in ``done``, and the
        generation seconds those took in ``seconds``."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = open(f"{self.path}.lock", "w")  # noqa: SIM115 (held until close or exit)
        try:
            fcntl.flock(self.lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RacError(f"another process is generating into {self.path.name} in "
                           f"{self.path.parent}; wait for it or use another output") from None
        head = json.dumps({"identity": identity}, sort_keys=True, default=str)
        lines = self.path.read_text().split("\n") if self.path.exists() else []
        rows = []
        for line in lines[1:] if lines and lines[0] == head else []:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # the line a kill cut short (or the empty last one)
                continue
            if 0 <= row["i"] < n:
                rows.append(row)
        self.done = {r["i"]: Completion(r["ids"], r["finish_reason"]) for r in rows}
        self.seconds = sum(r["s"] for r in rows)
        # rewritten whole: a journal of other inputs starts over, a torn line is dropped
        atomic_write_text(self.path, head + "\n" + "".join(json.dumps(r) + "\n" for r in rows))

    def add(self, batch: list[tuple[int, Completion]], seconds: float) -> None:
        """Append a batch that took ``seconds``, each completion with its share of them."""
        with self.path.open("a") as f:
            f.write("".join(json.dumps({"i": i, "ids": c.ids, "finish_reason": c.finish_reason,
                                        "s": seconds / len(batch)}) + "\n" for i, c in batch))
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        """Release the journal to the next process (its file stays until ``discard``)."""
        self.lock.close()

    @staticmethod
    def discard(path: Path) -> None:
        """Delete the journal at ``path``: what it was for is written."""
        Path(path).unlink(missing_ok=True)
        Path(f"{path}.lock").unlink(missing_ok=True)


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
        t0 = time.perf_counter()
        batch = list(zip(idx, backend.generate([prompts[i] for i in idx], sampling,
                                               [seeds[i] for i in idx])))
        for i, c in batch:
            out[i] = c
        if journal:
            journal.add(batch, time.perf_counter() - t0)
        bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]
