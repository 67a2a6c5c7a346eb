"""Block-wise reconstruction refinement: with the masks fixed, a few epochs of Adam on one decoder
block's kept weights so that, on the pruned model's inputs, the block's outputs match the dense
model's (calibration tokens only, no labels). Beyond the paper.

A quantized block is refined with its grids fixed (each group's scale and zero point as GPTQ fit
them): the block computes with its weights rounded to their grid, and the gradient passes
straight through the rounding to an unrounded fp32 copy that Adam moves (the straight-through
estimator); a weight changes only when its copy crosses to another grid point, so every weight
stays a code of the grid the export writes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from rac.prune.forward import block_output, map_tensors


def _normal(obj, device: str):
    """A copy of ``obj`` on ``device`` usable by autograd (tensors made under inference mode are
    not)."""
    return map_tensors(obj, lambda t: t.to(device).clone())


def refine_block(block: torch.nn.Module, linears: list[torch.nn.Linear],
                 states: list[tuple[torch.Tensor, dict]], targets: list[torch.Tensor],
                 weights: list[torch.Tensor], epochs: int, lr: float, device: str,
                 rounding: list[Callable[[torch.Tensor], torch.Tensor]] | None = None,
                 pruned: bool = True) -> list[float]:
    """Adam on the kept weights of ``linears`` (pruned weights stay exactly zero); the loss is the
    token-weighted mean squared error between the block's outputs on ``states`` and ``targets``.
    ``rounding`` (quantized linears): each linear's map of its fp32 copy onto its grid.
    ``pruned``: the zeros are the pruning mask (a quantized block's zero codes among them, which
    stay zero too); False (quantized, nothing pruned): every weight is trained.
    Quantized, the losses are measured with the weights on their grids before the first epoch
    and after each, and the block keeps the weights that measured lowest.
    ``lr`` is relative: each matrix's step size is ``lr`` times the RMS of its kept weights, since
    Adam's steps do not scale with the gradient, and weight scales differ by model (the embedded
    model's RMS is about 0.1, Qwen2.5-0.5B's 0.008-0.06 in blocks 0 and 12). Returns the loss of
    each epoch (its mean over batches; quantized: as measured, the start first).

    The block runs in its own dtype, but Adam updates an fp32 master copy of each trained matrix
    (with fp32 moments) that is rounded into the block after every step: in bf16 a step below
    half the weight's resolution (2^-8 of its magnitude) would otherwise be rounded away, every
    time."""
    with torch.inference_mode(False), torch.enable_grad():
        params = [lin.weight for lin in linears]
        masks = [(p != 0 if pruned else torch.ones_like(p, dtype=torch.bool)).detach().clone()
                 for p in params]
        saved = [p.requires_grad for p in block.parameters()]
        for p in block.parameters():
            p.requires_grad_(False)
        rounds = rounding or [lambda w: w] * len(params)
        live = [torch.nn.Parameter(p.detach().clone()) for p in params]  # the block's dtype
        master = [p.detach().float().clone() for p in params]
        for lin, p in zip(linears, live):
            lin.weight = p
        opt = torch.optim.Adam([{"params": [w], "lr": lr * float(w[m].pow(2).mean().sqrt())}
                                for w, m in zip(master, masks)])
        data = [(_normal(h, device), _normal(kw, device), _normal(t, device),
                 _normal(w, device).reshape(t.shape[:-1]))
                for (h, kw), t, w in zip(states, targets, weights)]

        def block_loss(h, kw, target, w) -> torch.Tensor:
            out = block_output(block(h, **kw))
            return (w.unsqueeze(-1) * (out.float() - target.float()) ** 2).sum() / \
                (w.sum() * target.shape[-1]).clamp(min=1)

        def measured() -> float:
            with torch.no_grad():
                return sum(float(block_loss(*batch)) for batch in data) / len(data)

        # on a grid a weight moves a whole step at a time and the loss can rise: the block
        # keeps the weights of the epoch (or the start) that measured lowest
        losses = [measured()] if rounding else []
        best = (losses[0], [p.detach().clone() for p in live]) if rounding else None
        for _ in range(epochs):
            total = 0.0
            for h, kw, target, w in data:
                loss = block_loss(h, kw, target, w)
                for p in live:
                    p.grad = None
                loss.backward()
                for w32, p, m in zip(master, live, masks):
                    w32.grad = p.grad.float() * m
                opt.step()
                with torch.no_grad():
                    for w32, p, m, onto in zip(master, live, masks, rounds):
                        w32.mul_(m)  # Adam's moments could move a pruned weight: keep it zero
                        p.copy_(onto(w32))
                total += float(loss.detach())
            losses.append(measured() if best else total / len(data))
            if best and losses[-1] < best[0]:
                best = (losses[-1], [p.detach().clone() for p in live])
        if best:
            with torch.no_grad():
                for p, kept in zip(live, best[1]):
                    p.copy_(kept)
        for lin, p in zip(linears, live):
            lin.weight = torch.nn.Parameter(p.detach().clone(), requires_grad=False)
        for p, flag in zip(block.parameters(), saved):
            p.requires_grad_(flag)
    return losses
