"""The block-by-block pruning driver: capture, hook, prune, propagate.

1. Capture the inputs of decoder block 0 with *all* its forward kwargs (attention mask, position
   ids, rotary embeddings) by stopping the model's forward at block 0.
2. For each decoder block: move it to the device, hook the targeted linears, run the calibration
   batches through it to accumulate statistics (masked tokens only), prune the linears, then run
   the batches through the *pruned* block to get the next block's inputs (the reference
   semantics: two passes per block; the statistics pass stops at the last hooked linear, so the
   dense block's down projection is never computed).
3. With ``true_sequential`` the statistics of each sublayer group (q/k/v, o, gate/up, down) come
   from the groups before it already pruned: one staged pass for Llama/Qwen2-style blocks (see
   ``rac.prune.staged``), one pass per group for others or with ``staged=False``.

Only one block and its activations sit on the device; the rest of the model stays on the CPU and
activations between blocks are kept on the CPU in the model's dtype, overwritten in place as each
block's outputs replace its inputs (one copy, whatever the number of blocks). Where the blocks'
weights live between uses (the loaded model, or streamed from the checkpoint to the output:
``rac.prune.stream``) and where the activations do (memory, or memory-mapped files past a budget:
``rac.prune.activations``) is the data movement's business; the driver asks for a block with
``store.use`` and computes the same bits either way.
"""

from __future__ import annotations

import time
from dataclasses import replace
from functools import partial

import torch
from tqdm import tqdm

from rac.prune import distributed
from rac.prune.activations import Activations
from rac.prune.asymmetric import dense_target_weight
from rac.prune.batches import Batch
from rac.prune.block_targets import error_targets, owl_targets
from rac.prune.config import QUANTIZER, PruneConfig
from rac.prune.forward import (
    block_output,
    capture_block_inputs,
    feed,
    inputs_of,
    propagate,
    sublayer_groups,
    to_device,
)
from rac.prune.magnitude import magnitude
from rac.prune.masks import Target
from rac.prune.quant_grid import GridParams
from rac.prune.refine import refine_block
from rac.prune.report import LayerReport, sparsity
from rac.prune.solve import prune_weights
from rac.prune.sparsegpt import CholeskyError
from rac.prune.staged import prune_block_staged, staged_forward_matches
from rac.prune.stats import CrossStats, LayerStats, all_finite, relative_error
from rac.prune.stream import Resident

# the grids of the quantized linears, by (block index, linear name)
Grids = dict[tuple[int, str], GridParams]


def prune_group(i: int, group: list[str], lins: dict[str, torch.nn.Linear], stats: LayerStats,
                stat_s: float, cfg: PruneConfig, cross: CrossStats | None = None,
                grids: Grids | None = None) -> list[LayerReport]:
    """Prune the linears of one group, which share the statistics ``stats`` (collected in
    ``stat_s`` seconds; the report shares all the group's time evenly between its linears).
    With ``cross`` (dense targets) the weights pruned are the fit of the dense outputs. The
    grids of quantized linears go into ``grids``."""
    if not all_finite(stats.H):
        raise ValueError(f"block {i} {group[0]}: calibration statistics hold NaN or Inf (the "
                         "activations overflowed); check the model's dtype")
    t0 = time.perf_counter()
    Ws = [lins[n].weight.data for n in group]
    targets = Ws if cross is None else [
        dense_target_weight(W, stats.H, cross.C, cfg.sparsegpt.percdamp) for W in Ws]
    try:
        pruned, damp, params = prune_weights(targets, stats, cfg)
    except CholeskyError as e:
        raise ValueError(f"block {i} {', '.join(group)}: {e}; raise --percdamp or add calibration "
                         "tokens") from e
    if params is not None and grids is not None:
        grids.update({(i, n): p for n, p in zip(group, params)})
    errors = [relative_error(W, W_hat, stats.H) for W, W_hat in zip(Ws, pruned)]
    for W, W_hat in zip(Ws, pruned):
        W.copy_(W_hat)
    each = (time.perf_counter() - t0 + stat_s) / len(group)
    return [LayerReport.of(i, n, W, err, damp, each, stats.tokens)
            for n, W, err in zip(group, Ws, errors)]


def _solved_group(i: int, group: list[str], lins: dict[str, torch.nn.Linear], stats: LayerStats,
                  stat_s: float, cfg: PruneConfig, cross: CrossStats | None
                  ) -> tuple[list[LayerReport], Grids]:
    """``prune_group`` with the grids it fits returned, not put into a shared dict."""
    grids: Grids = {}
    return prune_group(i, group, lins, stats, stat_s, cfg, cross, grids), grids


def _targeted(blocks: Resident, cfg: PruneConfig) -> dict[int, dict[str, torch.nn.Linear]]:
    """The linears to prune, per chosen block index."""
    names = cfg.scope.names()
    targeted = {i: {n: m for n, m in blocks[i].named_modules() if n in names}
                for i in cfg.scope.layer_indices(len(blocks))}
    if not any(targeted.values()):
        raise ValueError(f"scope {cfg.scope} selects no linear layer of this model")
    for i, lins in targeted.items():
        missing = set(names) - set(lins)
        if missing:
            raise ValueError(f"block {i} has no {sorted(missing)}: only Llama/Qwen2-style blocks "
                             "(self_attn.*_proj, mlp.*_proj) are supported")
        if cfg.quant is not None:  # every layer must split into whole groups
            for lin in lins.values():
                cfg.quant.grid.groups(lin.in_features)
    return targeted


def _prune_magnitude_only(store: Resident, targeted: dict[int, dict[str, torch.nn.Linear]],
                          cfg: PruneConfig) -> list[LayerReport]:
    """Magnitude pruning without calibration data: no forward passes at all (on the CPU)."""
    report = []
    for i in range(len(store)):
        with store.use(i, "cpu", done=True):
            for name, lin in targeted.get(i, {}).items():
                t0 = time.perf_counter()
                lin.weight.copy_(magnitude(lin.weight, cfg.target))
                report.append(LayerReport.of(i, name, lin.weight, None, None,
                                             time.perf_counter() - t0, 0))
    return report


def _prune_block_in_passes(i: int, block: torch.nn.Module, groups: list[list[str]],
                           lins: dict[str, torch.nn.Linear], states: list[tuple[torch.Tensor, dict]],
                           weights: list[torch.Tensor], cfg: PruneConfig,
                           dense_states: list[torch.Tensor] | None = None,
                           grids: Grids | None = None) -> list[LayerReport]:
    """Collect statistics with hooked forward passes and prune: one pass for all groups (the
    reference semantics), or one pass per group with ``true_sequential``. With ``dense_states``
    (dense targets, refinement) the dense block also runs on the dense model's hidden states,
    which it replaces by its outputs; with dense targets the statistics also pair the dense and
    the pruned input of every token."""
    dev = cfg.device
    report: list[LayerReport] = []
    wide = torch.float64 if next(iter(lins.values())).weight.dtype == torch.float64 else torch.float32
    for pass_groups in ([g] for g in groups) if cfg.true_sequential else [groups]:
        leaders = {g[0]: lins[g[0]] for g in pass_groups}
        stats = {name: LayerStats(lin.in_features, dev, dtype=wide)
                 for name, lin in leaders.items()}
        cross = {name: CrossStats(lin.in_features, dev) for name, lin in leaders.items()} \
            if dense_states is not None and cfg.dense_targets else {}
        t0 = time.perf_counter()
        for k, ((hidden, kwargs), w) in enumerate(zip(states, weights)):
            kw = to_device(kwargs, dev)
            seen = inputs_of(leaders, lambda h=hidden, kw=kw: block(h.to(dev), **kw),
                             stop_at=pass_groups[-1][0])
            w = w.to(dev)
            for name, x in seen.items():
                feed(stats[name], x, w)
            if dense_states is not None:
                out: list[torch.Tensor] = []
                dense_seen = inputs_of(
                    leaders, lambda h=dense_states[k], kw=kw, out=out: out.append(block_output(
                        block(h.to(dev), **kw))), stop_at=None)
                if cross:
                    keep = w > 0
                    for name, x in dense_seen.items():
                        flat = x.reshape(-1, x.shape[-1])[keep]
                        cross[name].add(flat, seen[name].reshape(-1, x.shape[-1])[keep], w[keep])
                dense_states[k].copy_(out[0])
        for s in stats.values():  # the rows of every rank (under torchrun)
            distributed.reduce_stats(s)
        per_linear = (time.perf_counter() - t0) / sum(map(len, pass_groups))

        # each group on a rank of its own, its weights then sent to every rank
        jobs = [partial(_solved_group, i, g, lins, stats[g[0]], per_linear * len(g), cfg,
                        cross.get(g[0])) for g in pass_groups]
        for rows, solved in distributed.spread(jobs, [[lins[n].weight.data for n in g]
                                                      for g in pass_groups]):
            report += rows
            if grids is not None:
                grids.update(solved)
    return report


def _prune_block(i: int, block: torch.nn.Module, lins: dict[str, torch.nn.Linear],
                 states: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                 dense_states: list[torch.Tensor] | None, cfg: PruneConfig, staged: bool,
                 last: bool, grids: Grids | None, acts: Activations) -> list[LayerReport]:
    """Prune block ``i`` (on the device) and leave its outputs in ``states`` (not after the
    ``last`` block); ``acts`` decides whether a staged pass holds the MLP's inputs."""
    dev = cfg.device
    groups = sublayer_groups(lins)
    if lins and staged:
        by_leader = {g[0]: g for g in groups}

        def prune_leader(leader: str, stats: LayerStats, seconds: float) -> list[LayerReport]:
            return prune_group(i, by_leader[leader], lins, stats, seconds, cfg, grids=grids)

        rows = sum(h.numel() // h.shape[-1] for h, _ in states)
        mlp_bytes = rows * block.mlp.down_proj.in_features * states[0][0].element_size()
        return prune_block_staged(block, set(by_leader), {n: lins[n].in_features for n in by_leader},
                                  states, weights, dev, prune_leader, acts.fits(mlp_bytes))
    report: list[LayerReport] = []
    if groups:
        report = _prune_block_in_passes(i, block, groups, lins, states, weights, cfg,
                                        dense_states, grids)
        if cfg.refine_epochs:  # dense_states now hold the dense block's outputs
            rounding = None
            if cfg.quant is not None:  # the grids stay as fit: refined weights stay codes
                rounding = [grids[(i, n)].rounding(cfg.quant.grid, lin.weight.device)
                            for n, lin in lins.items()]
            losses = refine_block(block, list(lins.values()), states, dense_states,
                                  weights, cfg.refine_epochs, cfg.refine_lr, dev, rounding,
                                  pruned=cfg.quant is None or bool(cfg.target.fraction))
            # zero codes come and go on a grid: the sparsity is the refined weights'; the
            # relative error stays the solve's (before refinement)
            report = [replace(r, block_refine_loss=losses, sparsity=sparsity(lins[r.name].weight))
                      for r in report]
    elif dense_states is not None:
        propagate(block, dense_states, states, dev)
    if not last:
        propagate(block, [h for h, _ in states], states, dev)
    return report


def _staged_matches(store: Resident, state: tuple[torch.Tensor, dict], dev: str) -> bool:
    with store.use(0, dev) as block:
        return staged_forward_matches(block, state, dev)


@torch.inference_mode()
def prune_model(lm: torch.nn.Module, blocks: torch.nn.ModuleList, batches: list[Batch] | None,
                cfg: PruneConfig, progress: bool = True, grids: Grids | None = None,
                store: Resident | None = None, activations: Activations | None = None
                ) -> list[LayerReport]:
    """Prune (and with ``cfg.quant`` quantize) ``lm`` in place; returns one report row per
    linear, and puts the grid of each quantized linear into ``grids`` if given. ``store``: where
    the blocks' weights come from and go (default: ``blocks`` as loaded, in memory; or
    ``rac.prune.stream.Streamed``); ``activations``: where the hidden states between blocks are
    kept (default: all in memory)."""
    store = Resident(blocks) if store is None else store
    acts = Activations() if activations is None else activations
    grids = {} if grids is None else grids  # refinement needs the grids of quantized blocks
    targeted = _targeted(store, cfg)
    if batches is None:
        if cfg.needs_calibration:
            raise ValueError(f"{', '.join(cfg.needs_calibration)}: only with a calibration set")
        return _prune_magnitude_only(store, targeted, cfg)

    dev = cfg.device
    if distributed.world()[1] > 1:
        distributed.check(cfg)
        batches = distributed.shard(batches)  # this rank's rows
    states = capture_block_inputs(lm, blocks, batches, dev, acts.hold, store.embedder())
    weights = [b.weight.reshape(-1) for b in batches]
    # dense targets and refinement: the dense model's hidden states, through the dense blocks
    dense_states = [acts.hold(h) for h, _ in states] if cfg.needs_dense_states else None
    staged = cfg.true_sequential and cfg.staged and _staged_matches(store, states[0], dev)
    allocate = owl_targets if cfg.owl_lambda else error_targets if cfg.error_span else None
    per_block = allocate(store, targeted, states, weights, cfg, acts) if allocate else {}
    report: list[LayerReport] = []
    desc = (f"quantize gptq {cfg.quant.scheme}" if cfg.method == QUANTIZER else
            f"prune {cfg.method} {cfg.target}" + (f" {cfg.quant.scheme}" if cfg.quant else ""))
    for i in tqdm(range(len(store)), desc=desc, unit="block", leave=False, disable=not progress):
        at = replace(cfg, target=Target(per_block[i])) if i in per_block else cfg
        with store.use(i, dev, done=True) as block:
            report += _prune_block(i, block, targeted.get(i, {}), states, weights, dense_states,
                                   at, staged, i + 1 == len(store), grids, acts)
    return report
