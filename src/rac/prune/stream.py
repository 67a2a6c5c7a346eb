"""Where the engine's decoder blocks live between uses: in memory (``Resident``, the model as
loaded), or streamed (``Streamed``: read from the checkpoint when the engine reaches a block,
written to the output when the block is final, and on the meta device in between).

The engine asks for a block with ``use(i, device, done)`` and sees the same module either way;
the solvers never know. Streaming holds one block's weights and the model's small parts (norms,
rotary tables); the output head is never read, and a plain embedding table only slice by slice,
for the rows block 0's inputs need (``Streamed.embedder``); both are copied to the output slice by
slice. So peak host memory is one block plus the calibration activations
(``rac.prune.activations``) rather than the model: a 1.5B's embedding and head are 933 MB each.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from rac import models
from rac.checkpoint import Checkpoint, ShardWriter, evict, load_skeleton, materialize, unique_state
from rac.io import RacError


@dataclass(frozen=True)
class MemoryConfig:
    """Where a run's data lives. ``stream``: the blocks' weights, read from the checkpoint block
    by block and written out as each is final; ``activation_mb``: the hidden states kept in
    memory (None: all), the rest memory-mapped from files in ``spill_dir`` (default: beside the
    output)."""

    stream: bool = False
    activation_mb: float | None = None
    spill_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.activation_mb is not None and self.activation_mb < 0:
            raise ValueError(f"--activation-memory {self.activation_mb}: give 0 or more MB")


# each batch's input embeddings in turn, from the batches' token ids
Embed = Callable[[list[torch.Tensor]], Iterator[torch.Tensor]]


class Resident:
    """Blocks held in memory: on ``device`` while used, on the CPU otherwise."""

    def __init__(self, blocks: torch.nn.ModuleList) -> None:
        self.blocks = blocks

    def embedder(self) -> Embed | None:
        """How block 0's inputs are embedded (None: by the model's own embedding module)."""
        return None

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> torch.nn.Module:
        """Block ``i``'s module, for its structure (a streamed block's weights may be on meta)."""
        return self.blocks[i]

    @contextmanager
    def use(self, i: int, device: str, done: bool = False) -> Iterator[torch.nn.Module]:
        """Block ``i`` on ``device`` for the duration; ``done``: its weights are final after."""
        block = self.blocks[i].to(device)
        try:
            yield block
        finally:
            block.to("cpu")


# a change applied to each finished block before it is written (FP8 after pruning)
Finish = Callable[[torch.nn.Module], None]


class Streamed(Resident):
    """Blocks read from ``ckpt`` when used and written to ``out``'s shards (one per block) once
    ``done``, after ``finish``; between uses their parameters are on the meta device. The other
    tensors are written by ``close``: from memory, or copied from the checkpoint for the head."""

    def __init__(self, lm: torch.nn.Module, blocks: torch.nn.ModuleList, ckpt: Checkpoint,
                 out: Path, finish: Finish | None = None) -> None:
        super().__init__(blocks)
        self.lm, self.ckpt, self.finish = lm, ckpt, finish
        names = {id(m): n for n, m in lm.named_modules()}
        self.prefixes = [names[id(b)] + "." for b in blocks]
        self.other = [k for k in unique_state(lm) if not k.startswith(tuple(self.prefixes))]
        lazy = [lm.get_output_embeddings()]
        table = lm.get_input_embeddings()
        self.table: str | None = None  # the embedding's name, when it is read slice by slice
        if type(table) is torch.nn.Embedding and table.max_norm is None:  # a plain lookup
            self.table = names[id(table)] + ".weight"
            lazy.append(table)
        lazy_names = {names[id(m)] + "." + k for m in lazy if m is not None for k in m.state_dict()}
        state = lm.state_dict()
        for k in sorted(lazy_names & set(self.other)):  # what materialize would have checked
            stored = ckpt.shape(k)[0]
            if stored != list(state[k].shape):
                raise RacError(f"{ckpt.path}: {k} is {stored} in the checkpoint but "
                               f"{list(state[k].shape)} in the config; the model does not match")
        models.check_tensors(
            materialize(lm, ckpt, names=[k for k in self.other if k not in lazy_names]), ckpt.path)
        lm.tie_weights()
        self.writer = ShardWriter(out, len(blocks) + len(self.other))
        self.written: set[int] = set()

    @contextmanager
    def use(self, i: int, device: str, done: bool = False) -> Iterator[torch.nn.Module]:
        if i in self.written:
            raise ValueError(f"block {i} was written already; its weights are final")
        block = self.blocks[i]
        materialize(block, self.ckpt, self.prefixes[i])
        try:
            models.check_finite(block, f"{self.ckpt.path} block {i}")
            block.to(device)
            yield block
            if done:
                block.to("cpu")
                if self.finish is not None:
                    self.finish(block)
                models.check_finite(block, f"the pruned model, block {i}")
                self.writer.write({self.prefixes[i] + k: t for k, t in block.state_dict().items()})
                self.written.add(i)
        finally:
            evict(block)
            _return_freed_memory()

    def close(self) -> None:
        """Write the tensors outside the blocks, the index and the configs (as
        ``save_pretrained`` writes them); every block must have been written."""
        if len(self.written) != len(self.blocks):
            raise ValueError(f"{len(self.blocks) - len(self.written)} blocks were never written")
        state = self.lm.state_dict()
        for k in self.other:
            if state[k].is_meta:  # the head and the embedding, never held whole
                self.writer.copy(self.ckpt, {k: state[k].dtype},
                                 functools.partial(models.check_tensors, where=self.ckpt.path))
            else:
                self.writer.write({k: state[k]})
        self.writer.close()
        lm = self.lm
        lm.config.dtype = str(lm.dtype).removeprefix("torch.")
        lm.config.architectures = [type(lm).__name__]
        lm.config.save_pretrained(self.writer.out)
        if lm.can_generate():
            lm.generation_config.save_pretrained(self.writer.out)

    def embedder(self) -> Embed | None:
        return None if self.table is None else self._embed

    def _embed(self, ids: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """Each batch's input embeddings in turn. The rows the batches use are read once from
        the checkpoint, a slice of the table at a time, into a table of those rows only (at most
        the vocabulary or the tokens, whichever is fewer); each batch is looked up in it when
        its turn comes. A token id outside the table, or a non-finite row used, is refused."""
        meta = self.lm.get_input_embeddings().weight
        used, where = torch.unique(torch.cat([t.reshape(-1) for t in ids]), return_inverse=True)
        if used.numel() and (used[0] < 0 or used[-1] >= meta.shape[0]):
            bad = int(used[0] if used[0] < 0 else used[-1])
            raise RacError(f"token id {bad} is outside the model's {meta.shape[0]} embeddings: "
                           "the calibration set was tokenized for another model")
        rows = torch.empty(used.numel(), meta.shape[1], dtype=meta.dtype)
        start = 0
        for part in self.ckpt.slices(self.table, meta.dtype):
            lo, hi = torch.searchsorted(used, torch.tensor([start, start + part.shape[0]]))
            rows[lo:hi] = part[used[lo:hi] - start]
            start += part.shape[0]
        models.check_tensors({self.table: rows}, self.ckpt.path)
        for at, t in zip(where.split([t.numel() for t in ids]), ids):
            yield rows[at].view(*t.shape, -1)


def _return_freed_memory() -> None:
    """Hand the heap's freed memory back to the system (glibc's ``malloc_trim``; a no-op
    elsewhere). Without it glibc keeps much of each evicted block's memory for reuse, and the
    process grows by a fraction of every block (measured: 32 blocks of 8.6 MB each grew the
    resident set by 140 MB; with it, by none)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") else None


def streamed_model(model: str | Path, out: Path, trust_remote_code: bool = False,
                   finish: Finish | None = None) -> tuple[torch.nn.Module, Streamed]:
    """``model`` with its blocks streamed from its checkpoint into shards in ``out``."""
    lm, ckpt = load_skeleton(model, trust_remote_code)
    return lm, Streamed(lm, models.decoder_blocks(lm), ckpt, out, finish)
