"""Per-block sparsities from the dense model's calibration statistics (OWL, error-driven): the
pass through the dense blocks that feeds ``rac.prune.allocation``'s pure functions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import torch

from rac.prune.activations import Activations
from rac.prune.allocation import error_sparsities, outlier_ratio, owl_sparsities, sparsity_grid
from rac.prune.config import PruneConfig
from rac.prune.forward import feed, inputs_of, propagate, sublayer_groups, to_device
from rac.prune.masks import Target
from rac.prune.solve import prune_weights
from rac.prune.stats import LayerStats, relative_error
from rac.prune.stream import Resident


def _dense_statistics(store: Resident, targeted: dict[int, dict[str, torch.nn.Linear]],
                      states: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                      acts: Activations, dev: str, hessian: bool
                      ) -> Iterator[tuple[int, list[list[str]], dict[str, LayerStats]]]:
    """One pass through the dense blocks on a copy of the block inputs, before any pruning:
    for each targeted block, its groups and the statistics of each group's input (keyed by the
    group's first linear). The block is on ``dev`` while its statistics are used."""
    hs = [acts.hold(h) for h, _ in states]
    for i in range(len(store)):
        with store.use(i, dev) as block:
            lins = targeted.get(i, {})
            if lins:
                groups = sublayer_groups(lins)
                leaders = {g[0]: lins[g[0]] for g in groups}
                stats = {n: LayerStats(lin.in_features, dev, hessian=hessian)
                         for n, lin in leaders.items()}
                for h, (_, kwargs), w in zip(hs, states, weights):
                    seen = inputs_of(leaders, lambda h=h, kw=kwargs, b=block: b(
                        h.to(dev), **to_device(kw, dev)), stop_at=None)
                    for n, x in seen.items():
                        feed(stats[n], x, w.to(dev))
                yield i, groups, stats
            propagate(block, hs, states, dev)


@torch.inference_mode()
def owl_targets(store: Resident, targeted: dict[int, dict[str, torch.nn.Linear]],
                states: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                cfg: PruneConfig, acts: Activations) -> dict[int, float]:
    """OWL's per-block sparsities from the dense model's calibration activations."""
    ratios, sizes, chosen = [], [], []
    for i, groups, stats in _dense_statistics(store, targeted, states, weights, acts, cfg.device,
                                              hessian=False):
        lins = targeted[i]
        names = [n for g in groups for n in g]
        ratios.append(outlier_ratio([lins[n].weight for n in names],
                                    [stats[g[0]].col_norm for g in groups for _ in g], cfg.owl_m))
        sizes.append(sum(lins[n].weight.numel() for n in names))
        chosen.append(i)
    return dict(zip(chosen, owl_sparsities(ratios, sizes, cfg.target.sparsity, cfg.owl_lambda)))


@torch.inference_mode()
def error_targets(store: Resident, targeted: dict[int, dict[str, torch.nn.Linear]],
                  states: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                  cfg: PruneConfig, acts: Activations) -> dict[int, float]:
    """Error-driven per-block sparsities: each block's summed relative reconstruction error
    (``cfg.method`` on the dense model's inputs, weights left as they are) at every sparsity of
    the grid, then ``error_sparsities``. Costs one dense pass and one solve per grid point."""
    grid = sparsity_grid(cfg.target.sparsity, cfg.error_span, cfg.error_step)
    curves, sizes, chosen = [], [], []
    for i, groups, stats in _dense_statistics(store, targeted, states, weights, acts, cfg.device,
                                              hessian=True):
        lins = targeted[i]
        curve = []
        for s in grid:
            at = replace(cfg, target=Target(s))
            err = 0.0
            for g in groups:
                Ws = [lins[n].weight.data for n in g]
                pruned, _, _ = prune_weights(Ws, stats[g[0]], at)
                err += sum(relative_error(W, P, stats[g[0]].H) for W, P in zip(Ws, pruned))
            curve.append(err)
        curves.append(curve)
        sizes.append(sum(lin.weight.numel() for lin in lins.values()))
        chosen.append(i)
    if len(set(sizes)) > 1:
        raise ValueError("error-driven allocation needs targeted blocks of equal size")
    return dict(zip(chosen, error_sparsities(curves, grid, cfg.target.sparsity)))
