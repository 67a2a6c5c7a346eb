"""Where the engine keeps the calibration rows' hidden states between blocks: in memory up to a
budget, beyond it in memory-mapped files. Activations that can be recomputed (the MLP's input in
a staged block) are held only while the budget has room for them, and recomputed past it.

A spilled tensor is an ordinary CPU tensor whose storage is a shared mapping of a file (written
through, never copied back), so the engine reads it and overwrites it in place as it does a
tensor in memory, and computes bit for bit the same. Its pages are file-backed: the kernel writes
them back and drops them under memory pressure (a cgroup limit included) instead of failing, and
reads them back when the next block needs them. Each file is unlinked as soon as it is mapped:
its disk space is freed with the tensor, and a killed run leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

MB = 2 ** 20


class Activations:
    """Copies of hidden states, on the CPU: the first ``budget_mb`` in memory (None: all of
    them), the rest memory-mapped from files in ``spill_dir`` (default: the system's temporary
    directory; give one on a disk, since a tmpfs is memory)."""

    def __init__(self, budget_mb: float | None = None, spill_dir: Path | None = None) -> None:
        self.budget = None if budget_mb is None else int(budget_mb * MB)
        self.spill_dir = Path(spill_dir) if spill_dir is not None else None
        self.in_memory = 0  # bytes held in memory
        self.spilled = 0  # bytes held in mapped files

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes fit in the memory budget (what the engine asks before
        holding activations it could recompute instead)."""
        return self.budget is None or self.in_memory + size <= self.budget

    def hold(self, t: torch.Tensor) -> torch.Tensor:
        """A CPU copy of ``t``, in memory while the budget allows, else memory-mapped."""
        size = t.numel() * t.element_size()
        if self.fits(size):
            self.in_memory += size
            return t.to("cpu", copy=True)
        self.spilled += size
        return self._mapped(t)

    def _mapped(self, t: torch.Tensor) -> torch.Tensor:
        where = self.spill_dir or Path(tempfile.gettempdir())
        where.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=where, prefix=".rac-activations.", suffix=".bin")
        os.close(fd)
        try:
            mapped = torch.from_file(name, shared=True, size=t.numel(), dtype=t.dtype)
        finally:
            os.unlink(name)
        return mapped.view(t.shape).copy_(t)
