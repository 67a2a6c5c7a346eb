"""Calibration across processes (``torchrun``): data-parallel statistics, weight-parallel solves.

Each rank takes every world-th calibration batch, so the forward passes and the hidden states it
holds are its share of the rows. The layer statistics (H and its token count) are summed over
the ranks before any solve, so every rank then holds the statistics of all the rows, as one
process would. The groups of a pass are solved by the ranks in turn (group k on rank
k mod world), each on its own, and every solved group's weights, grids and report are then
broadcast from its rank: every rank goes on with the same pruned block. With one process (no
process group) each function here does nothing more than run what it is given.

The same model as one process, up to the order of the floating-point sums of H: identical in
float64 (``tests/test_distributed.py``). gloo on CPUs; NCCL where the device is a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from rac.prune.config import PruneConfig
from rac.prune.stats import LayerStats

R = TypeVar("R")


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str) -> None:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1),
    gloo on the CPU and NCCL on a GPU; nothing outside ``torchrun``."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # a GPU per rank
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def shard(items: list) -> list:
    """This rank's share of ``items``: every world-th one, from its rank."""
    rank, size = world()
    if len(items) < size:
        raise ValueError(f"{len(items)} calibration batches for {size} ranks: give each rank at "
                         "least one (more calibration tokens, a smaller --batch-tokens, or fewer "
                         "ranks)")
    return items[rank::size]


def reduce_stats(stats: LayerStats) -> None:
    """Sum ``stats`` over the ranks, in place."""
    if world()[1] > 1:
        stats.combine(lambda t: dist.all_reduce(t))


def spread(jobs: list[Callable[[], R]], outputs: list[list[torch.Tensor]]) -> list[R]:
    """Run ``jobs[k]`` on rank k mod world, all ranks at once; then broadcast from that rank the
    tensors ``outputs[k]`` (which the job fills in place) and the job's result. Returns every
    job's result, on every rank."""
    rank, size = world()
    mine = {k: job() for k, job in enumerate(jobs) if k % size == rank}
    if size == 1:
        return [mine[k] for k in range(len(jobs))]
    results = []
    for k, tensors in enumerate(outputs):
        for t in tensors:
            dist.broadcast(t, src=k % size)
        box = [mine.get(k)]
        dist.broadcast_object_list(box, src=k % size)
        results.append(box[0])
    return results


def check(cfg: PruneConfig) -> None:
    """What does not split over ranks yet is refused under ``torchrun``, not run on one rank's
    rows."""
    unsplit = {"--true-sequential (staged)": cfg.true_sequential and cfg.staged,
               "--dense-targets": cfg.dense_targets,
               "--refine-epochs (or --recipe best)": cfg.refine_epochs > 0,
               "--owl-lambda": cfg.owl_lambda > 0, "--error-span": cfg.error_span > 0}
    given = [name for name, on in unsplit.items() if on]
    if given:
        raise ValueError(f"{', '.join(given)}: not split over torchrun ranks yet; run in one "
                         "process")
