"""Running calibration batches through decoder blocks: capturing block 0's inputs, stopping a
forward at a module, and feeding a linear's inputs into its statistics."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress

import torch

from rac.prune.batches import Batch
from rac.prune.config import SEQUENTIAL_GROUPS
from rac.prune.stats import LayerStats


class Stop(Exception):
    """Raised by a hook to end a forward pass once what it needs has been seen."""


def map_tensors(obj, fn: Callable[[torch.Tensor], torch.Tensor]):
    """``fn`` applied to every tensor of ``obj`` (a tensor, or tuples, lists and dicts of them)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def to_device(obj, device):
    """``obj`` (a tensor, or tuples, lists and dicts of them) on ``device``."""
    return map_tensors(obj, lambda t: t.to(device))


def feed(stats: LayerStats, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Feed the kept tokens (weight > 0) of activations ``x`` (..., d) into ``stats``."""
    x = x.reshape(-1, x.shape[-1])
    keep = weight > 0
    if bool(keep.all()):  # no padding: skip the copies that selecting rows would make
        stats.add(x, None if bool((weight == 1).all()) else weight)
    else:
        stats.add(x[keep], weight[keep])


@torch.inference_mode()
def input_stats(lm: torch.nn.Module, linears: dict[str, torch.nn.Module], batches: list[Batch],
                device: str = "cpu") -> dict[str, LayerStats]:
    """Each of ``linears``' input statistics over whole forward passes of ``lm`` (padding kept
    out): the H against which a pruned layer's error is measured on the dense model's inputs."""
    stats = {n: LayerStats(lin.in_features, device) for n, lin in linears.items()}
    current: dict[str, torch.Tensor] = {}  # the token weights of the batch being run

    def hook_for(name: str) -> Callable:
        return lambda module, args: feed(stats[name], args[0], current["weight"])

    handles = [lin.register_forward_pre_hook(hook_for(n)) for n, lin in linears.items()]
    try:
        for b in batches:
            current["weight"] = b.weight.reshape(-1).to(device)
            lm(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device))
    finally:
        for h in handles:
            h.remove()
    return stats


def inputs_of(linears: dict[str, torch.nn.Module], run: Callable[[], object], stop_at: str | None
              ) -> dict[str, torch.Tensor]:
    """The inputs each of ``linears`` receives while ``run()`` executes; the forward stops at
    ``stop_at``'s input, since nothing after it is needed (None: it runs to the end)."""
    got: dict[str, torch.Tensor] = {}

    def hook_for(name: str) -> Callable:
        def hook(module, args):
            got[name] = args[0]
            if name == stop_at:
                raise Stop
        return hook

    handles = [lin.register_forward_pre_hook(hook_for(n)) for n, lin in linears.items()]
    try:
        with suppress(Stop):
            run()
    finally:
        for h in handles:
            h.remove()
    if stop_at is not None and stop_at not in got:
        raise ValueError(f"the forward pass never reached {stop_at}")
    return got


def block_output(out: torch.Tensor | tuple) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


@torch.inference_mode()
def capture_block_inputs(lm: torch.nn.Module, blocks: torch.nn.ModuleList, batches: list[Batch],
                         device: str, keep: Callable[[torch.Tensor], torch.Tensor] | None = None,
                         embed: Callable[[list[torch.Tensor]], Iterator[torch.Tensor]] | None = None
                         ) -> list[tuple[torch.Tensor, dict]]:
    """The hidden states entering block 0 and its forward kwargs (attention mask, position ids,
    rotary embeddings), per batch, on the CPU, by stopping the model's forward at block 0.
    ``keep`` makes the CPU copy of each batch's hidden states (``Activations.hold``); ``embed``
    gives the batches' input embeddings in turn, in place of the model's embedding module (which
    may then be on the meta device). Block 0's weights are never used (they may be on the meta device)."""
    captured: list[tuple[torch.Tensor, dict]] = []

    def grab(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values")}
        captured.append((keep(hidden) if keep else hidden.to("cpu"), to_device(kwargs, "cpu")))
        raise Stop

    inner = lm.model
    table = inner.embed_tokens if embed is None else None
    movable = [m for m in (table, getattr(inner, "rotary_emb", None)) if m is not None]
    for m in movable:
        m.to(device)
    embeds = embed([b.input_ids for b in batches]) if embed is not None else None
    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for b in batches:
            tokens = ({"input_ids": b.input_ids.to(device)} if embeds is None else
                      {"inputs_embeds": next(embeds).to(device)})
            with suppress(Stop):
                inner(**tokens, attention_mask=b.attention_mask.to(device), use_cache=False)
    finally:
        handle.remove()
        for m in movable:
            m.to("cpu")
    return captured


def propagate(block: torch.nn.Module, hiddens: list[torch.Tensor],
               states: list[tuple[torch.Tensor, dict]], dev: str) -> None:
    """Replace each batch's hidden states by the block's outputs (kwargs from ``states``)."""
    for h, (_, kwargs) in zip(hiddens, states):
        h.copy_(block_output(block(h.to(dev), **to_device(kwargs, dev))))


def sublayer_groups(lins: dict[str, torch.nn.Linear]) -> list[list[str]]:
    """The targeted linears of a block in sublayer groups (those that read the same input)."""
    return [g for g in ([n for n in grp if n in lins] for grp in SEQUENTIAL_GROUPS) if g]
