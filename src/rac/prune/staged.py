"""True-sequential pruning of a Llama/Qwen2 block in one staged pass.

A Llama/Qwen2 decoder block computes, with a and m the inputs of o_proj and down_proj:

    x = input_layernorm(h);  a = attention(q(x), k(x), v(x));  r = h + o_proj(a)
    y = post_attention_layernorm(r);  m = act(gate_proj(y)) * up_proj(y);  out = r + down_proj(m)

Running it stage by stage over all batches lets each group be pruned as soon as its inputs are
known, and the next stage then sees the pruned group: true-sequential in one pass instead of one
pass per sublayer group. The attention and the MLP are called as the model's own modules, stopped
at o_proj / down_proj by a hook, so rotary embeddings, GQA, q/k norms and the attention kernel
stay the model's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from rac.prune.config import ATTN, MLP
from rac.prune.forward import block_output, feed, inputs_of, to_device
from rac.prune.report import LayerReport
from rac.prune.stats import LayerStats

log = logging.getLogger(__name__)

# prune_group(leader, stats, seconds spent on its statistics) -> the group's report rows
PruneGroup = Callable[[str, LayerStats, float], list[LayerReport]]


def _input_of(linear: torch.nn.Module, run: Callable[[], object]) -> torch.Tensor:
    return inputs_of({"linear": linear}, run, stop_at="linear")["linear"]


def _attn_input(block: torch.nn.Module, h: torch.Tensor, kwargs: dict) -> torch.Tensor:
    attn = block.self_attn
    return _input_of(attn.o_proj, lambda: attn(hidden_states=block.input_layernorm(h), **kwargs))


def _mlp_input(block: torch.nn.Module, r: torch.Tensor) -> torch.Tensor:
    mlp = block.mlp
    return _input_of(mlp.down_proj, lambda: mlp(block.post_attention_layernorm(r)))


def _staged_forward(block: torch.nn.Module, h: torch.Tensor, kwargs: dict) -> torch.Tensor:
    r = h + block.self_attn.o_proj(_attn_input(block, h, kwargs))
    return r + block.mlp.down_proj(_mlp_input(block, r))


@torch.inference_mode()
def staged_forward_matches(block: torch.nn.Module, state: tuple[torch.Tensor, dict], dev: str
                           ) -> bool:
    """Whether the staged forward reproduces ``block`` on one batch: the check that a block is of
    the Llama/Qwen2 form before it is pruned in stages."""
    names = ("input_layernorm", "post_attention_layernorm", "self_attn.o_proj", "mlp.down_proj")
    have = {n for n, _ in block.named_modules()}
    if not all(n in have for n in names):
        return False
    block.to(dev)
    try:
        h, kwargs = state[0].to(dev), to_device(state[1], dev)
        out = block_output(block(h, **kwargs))
        # The same kernels on the same inputs: equal up to rounding in the model's dtype; a block
        # of another form (an extra norm, a scaled residual) is off by far more.
        tol = max(1e-5, 4 * torch.finfo(out.dtype).eps)
        ok = bool(torch.linalg.vector_norm((_staged_forward(block, h, kwargs) - out).float())
                  <= tol * torch.linalg.vector_norm(out.float()))
    except (TypeError, ValueError, RuntimeError):
        ok = False
    finally:
        block.to("cpu")
    if not ok:
        log.warning("%s is not a Llama/Qwen2-style block; true-sequential runs one forward pass "
                    "per sublayer group instead of one staged pass", type(block).__name__)
    return ok


def _stash(dev: str, rows: int, widths: list[int], dtype: torch.dtype) -> str:
    """Where a staged block keeps its activations (``rows`` tokens of each width): on a GPU when
    they take under half of its free memory, else on the CPU."""
    if torch.device(dev).type != "cuda":
        return "cpu"
    need = rows * sum(widths) * torch.empty((), dtype=dtype).element_size()
    return dev if need < torch.cuda.mem_get_info(torch.device(dev))[0] // 2 else "cpu"


def prune_block_staged(block: torch.nn.Module, leaders: set[str], in_features: dict[str, int],
                       states: list[tuple[torch.Tensor, dict]], weights: list[torch.Tensor],
                       dev: str, prune_group: PruneGroup, hold_mlp: bool = True
                       ) -> list[LayerReport]:
    """Prune one block true-sequentially in one staged pass; leaves its outputs in ``states``.
    ``leaders`` are the first linears of the groups to prune. Stage activations (the inputs of
    o_proj, then of down_proj) are held for all batches, in the model's dtype, on the GPU when
    they fit (see ``_stash``). Without ``hold_mlp`` the down projection's inputs (the widest
    activations: 5.8x the hidden states in a Qwen2.5-1.5B) are recomputed after it is pruned
    instead of held: the same bits, one more pass through the gate and up projections."""
    kwargs_dev = [to_device(kw, dev) for _, kw in states]  # small: masks and rotary tables
    rows = sum(h.numel() // h.shape[-1] for h, _ in states)
    home = _stash(dev, rows, [states[0][0].shape[-1], block.self_attn.o_proj.in_features,
                              block.mlp.down_proj.in_features], states[0][0].dtype)
    hs = [h.to(home) for h, _ in states]  # the block's inputs, replaced in place by r, then out
    report: list[LayerReport] = []

    def stage(leader: str, inputs: Callable[[int], torch.Tensor], keep: bool) -> list[torch.Tensor]:
        """Compute the leader's input for every batch (kept if ``keep``), then prune its group."""
        if leader not in leaders and not keep:
            return []
        t0 = time.perf_counter()
        stats = LayerStats(in_features[leader], dev) if leader in leaders else None
        kept = []
        for k, w in enumerate(weights):
            x = inputs(k)
            if stats is not None:
                feed(stats, x, w.to(dev))
            if keep:
                kept.append(x.to(home))
        if stats is not None:
            report.extend(prune_group(leader, stats, time.perf_counter() - t0))
        return kept

    stage(ATTN[0], lambda k: block.input_layernorm(hs[k].to(dev)), keep=False)
    a = stage(ATTN[3], lambda k: _attn_input(block, hs[k].to(dev), kwargs_dev[k]), keep=True)
    for h, ak in zip(hs, a):
        h.add_(block.self_attn.o_proj(ak.to(dev)).to(home))  # h is now r
    del a
    stage(MLP[0], lambda k: block.post_attention_layernorm(hs[k].to(dev)), keep=False)
    m = stage(MLP[2], lambda k: _mlp_input(block, hs[k].to(dev)), keep=hold_mlp)
    for k, ((out, _), r) in enumerate(zip(states, hs)):
        # the MLP itself computes down_proj(m) from the m it would hand the hook
        y = (block.mlp.down_proj(m[k].to(dev)) if hold_mlp else
             block.mlp(block.post_attention_layernorm(r.to(dev))))
        r.add_(y.to(home))
        if r is not out:
            out.copy_(r)
    return report
