"""The block-by-block pruning driver: capture, hook, prune, propagate.

1. Capture the inputs of decoder block 0 with *all* its forward kwargs (attention mask, position
   ids, rotary embeddings) by stopping the model's forward at block 0.
2. For each decoder block: move it to the device, hook the targeted linears, run the calibration
   batches through it to accumulate statistics (masked tokens only), prune the linears, then run
   the batches through the *pruned* block to get the next block's inputs. With ``true_sequential``
   the statistics of each sublayer group (q/k/v, o, gate/up, down) are collected after the groups
   before it were pruned.

Only one block and its activations sit on the device; the rest of the model stays on the CPU and
activations between blocks are kept on the CPU in the model's dtype.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from rac.prune.magnitude import magnitude
from rac.prune.masks import Target
from rac.prune.sparsegpt import CholeskyError, SparseGPTConfig, sparsegpt
from rac.prune.stats import LayerStats, relative_error
from rac.prune.wanda import wanda

METHODS = ("magnitude", "wanda", "sparsegpt")
ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# The order in which a Llama/Qwen2 block uses its linears: what true-sequential follows.
SEQUENTIAL_GROUPS = (ATTN[:3], ATTN[3:], MLP[:2], MLP[2:])


@dataclass(frozen=True)
class Scope:
    """Which linears to prune: a kind (all, attn, mlp) at a set of layers.

    Written ``KIND[@LAYERS]`` where LAYERS is ``all``, ``first-third``, ``first-last-third`` (the
    paper's Table 4 scopes) or an index list such as ``0-3,7``."""

    kind: str = "all"
    layers: str = "all"

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, layers = text.partition("@")
        scope = cls(kind or "all", layers or "all")
        if scope.kind not in ("all", "attn", "mlp"):
            raise ValueError(f"scope kind {scope.kind!r} unknown; use all, attn or mlp")
        named = ("all", "first-third", "first-last-third")
        if scope.layers not in named and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", scope.layers):
            raise ValueError(f"scope layers {scope.layers!r} unknown; use {', '.join(named)} or an "
                             "index list such as 0-3,7")
        return scope

    def layer_indices(self, n_layers: int) -> list[int]:
        third = n_layers // 3
        if self.layers == "all":
            chosen = set(range(n_layers))
        elif self.layers == "first-third":
            chosen = set(range(third))
        elif self.layers == "first-last-third":
            chosen = set(range(third)) | set(range(n_layers - third, n_layers))
        else:
            chosen = set()
            for part in self.layers.split(","):  # validated by parse()
                lo, _, hi = part.partition("-")
                chosen.update(range(int(lo), int(hi or lo) + 1))
            bad = sorted(i for i in chosen if not 0 <= i < n_layers)
            if bad:
                raise ValueError(f"layers {bad} do not exist: the model has {n_layers} (0-{n_layers - 1})")
        return sorted(chosen)

    def names(self) -> tuple[str, ...]:
        return {"all": ATTN + MLP, "attn": ATTN, "mlp": MLP}[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}@{self.layers}"


@dataclass(frozen=True)
class PruneConfig:
    method: str
    target: Target
    scope: Scope = Scope()
    true_sequential: bool = False
    sparsegpt: SparseGPTConfig = SparseGPTConfig()
    segment_weights: dict[int, float] = field(default_factory=dict)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r} unknown; use {', '.join(METHODS)}")


@dataclass
class Batch:
    """Right-padded calibration rows. With causal attention a real token never sees the padding
    after it, and ``weight`` (0 on padding) keeps padding out of every statistic."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    weight: torch.Tensor  # (B, T) token weights, 0 = excluded


def make_batches(rows: list[tuple[list[int], list[int], list[int]]], pad_id: int,
                 segment_weights: dict[int, float], max_tokens: int = 8192) -> list[Batch]:
    """Group (ids, mask, segment) rows of similar length into batches of at most ``max_tokens``."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches, cur = [], []

    def flush() -> None:
        width = max(len(rows[i][0]) for i in cur)
        ids = torch.full((len(cur), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(cur), width), dtype=torch.long)
        weight = torch.zeros((len(cur), width), dtype=torch.float32)
        for r, i in enumerate(cur):
            x, m, seg = rows[i]
            ids[r, :len(x)] = torch.tensor(x)
            mask[r, :len(x)] = torch.tensor(m)
            weight[r, :len(x)] = torch.tensor(
                [mi * segment_weights.get(s, 1.0) for mi, s in zip(m, seg)])
        batches.append(Batch(ids, mask, weight))

    for i in order:
        if cur and len(rows[i][0]) * (len(cur) + 1) > max_tokens:
            flush()
            cur = []
        cur.append(i)
    if cur:
        flush()
    return batches


def _to(obj, device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


class _Stop(Exception):
    pass


@torch.inference_mode()
def capture_block_inputs(lm: torch.nn.Module, blocks: torch.nn.ModuleList, batches: list[Batch],
                         device: str) -> list[tuple[torch.Tensor, dict]]:
    """The hidden states entering block 0 and its forward kwargs, per batch, on the CPU."""
    captured: list[tuple[torch.Tensor, dict]] = []

    def grab(module, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values")}
        captured.append((hidden.to("cpu"), _to(kwargs, "cpu")))
        raise _Stop

    inner = lm.model
    movable = [m for m in (inner.embed_tokens, getattr(inner, "rotary_emb", None)) if m is not None]
    for m in movable:
        m.to(device)
    handle = blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        for b in batches:
            with suppress(_Stop):
                inner(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device),
                      use_cache=False)
    finally:
        handle.remove()
        for m in movable:
            m.to("cpu")
    return captured


@contextmanager
def _collect(linears: dict[str, torch.nn.Linear], stats: dict[str, LayerStats],
             current: dict) -> Iterator[None]:
    """Hooks that feed each linear's inputs (kept tokens only) into its statistics."""
    def hook_for(name: str) -> Callable:
        def hook(module, args):
            x = args[0].reshape(-1, args[0].shape[-1])
            keep = current["keep"]
            stats[name].add(x[keep], current["weight"][keep])
        return hook

    handles = [lin.register_forward_pre_hook(hook_for(n)) for n, lin in linears.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def prune_linear(W: torch.Tensor, stats: LayerStats | None, cfg: PruneConfig
                 ) -> tuple[torch.Tensor, float | None]:
    if cfg.method == "magnitude":
        return magnitude(W, cfg.target), None
    if stats is None or stats.tokens == 0:
        raise ValueError(f"{cfg.method} needs calibration statistics; none reached this layer")
    if cfg.method == "wanda":
        return wanda(W, stats.col_norm, cfg.target), None
    return sparsegpt(W, stats.H, cfg.target, cfg.sparsegpt)


@torch.inference_mode()
def prune_model(lm: torch.nn.Module, blocks: torch.nn.ModuleList, batches: list[Batch] | None,
                cfg: PruneConfig, progress: bool = True) -> list[dict]:
    """Prune ``lm`` in place; returns one report row per pruned linear."""
    n_layers = len(blocks)
    chosen = set(cfg.scope.layer_indices(n_layers))
    targeted = {i: {n: m for n, m in blocks[i].named_modules() if n in cfg.scope.names()}
                for i in chosen}
    if not any(targeted.values()):
        raise ValueError(f"scope {cfg.scope} selects no linear layer of this model")
    for i, lins in targeted.items():
        missing = set(cfg.scope.names()) - set(lins)
        if missing:
            raise ValueError(f"block {i} has no {sorted(missing)}: only Llama/Qwen2-style blocks "
                             "(self_attn.*_proj, mlp.*_proj) are supported")
    report: list[dict] = []
    if batches is None:  # magnitude without calibration data: no forward passes at all
        if cfg.method != "magnitude":
            raise ValueError(f"{cfg.method} needs a calibration set")
        for i in sorted(chosen):
            for name, lin in targeted[i].items():
                t0 = time.perf_counter()
                lin.weight.copy_(magnitude(lin.weight, cfg.target))
                report.append(_row(i, name, lin.weight, None, None, time.perf_counter() - t0, 0))
        return report

    dev = cfg.device
    states = capture_block_inputs(lm, blocks, batches, dev)
    current: dict = {}
    bar = tqdm(range(n_layers), desc=f"prune {cfg.method} {cfg.target}", unit="block",
               disable=not progress)

    def run_block(block: torch.nn.Module) -> list[torch.Tensor]:
        outs = []
        for (hidden, kwargs), b in zip(states, batches):
            current["keep"] = (b.weight.reshape(-1) > 0).to(dev)
            current["weight"] = b.weight.reshape(-1).to(dev)
            out = block(hidden.to(dev), **_to(kwargs, dev))
            out = out[0] if isinstance(out, tuple) else out
            outs.append(out.to("cpu"))
        return outs

    for i in bar:
        block = blocks[i].to(dev)
        lins = targeted.get(i, {})
        if lins:
            # The linears of a group read the same input (q/k/v the normed hidden states,
            # gate/up the normed residual), so one set of statistics serves the whole group.
            groups = [g for g in ([n for n in grp if n in lins] for grp in SEQUENTIAL_GROUPS) if g]
            for pass_groups in ([[g] for g in groups] if cfg.true_sequential else [groups]):
                stats = {g[0]: LayerStats(lins[g[0]].in_features, dev) for g in pass_groups}
                t0 = time.perf_counter()
                with _collect({g[0]: lins[g[0]] for g in pass_groups}, stats, current):
                    run_block(block)
                stat_s = (time.perf_counter() - t0) / sum(map(len, pass_groups))
                for g in pass_groups:
                    st = stats[g[0]]
                    if not torch.isfinite(st.H).all():
                        raise ValueError(f"block {i} {g[0]}: calibration statistics hold NaN or "
                                         "Inf (the activations overflowed); check the model's dtype")
                    for n in g:
                        t0 = time.perf_counter()
                        W = lins[n].weight.data
                        try:
                            W_hat, damp = prune_linear(W, st, cfg)
                        except CholeskyError as e:
                            raise ValueError(f"block {i} {n}: {e}; raise --percdamp or add "
                                             "calibration tokens") from e
                        err = relative_error(W, W_hat, st.H)
                        W.copy_(W_hat)
                        report.append(_row(i, n, W, err, damp, time.perf_counter() - t0 + stat_s,
                                           st.tokens))
                del stats
        if i + 1 < n_layers:
            hidden_next = run_block(block)
            states = [(h, kw) for h, (_, kw) in zip(hidden_next, states)]
        blocks[i].to("cpu")
    return report


def _row(layer: int, name: str, W: torch.Tensor, err: float | None, damp: float | None,
         seconds: float, tokens: int) -> dict:
    return {"layer": layer, "name": name, "shape": list(W.shape),
            "sparsity": float((W == 0).float().mean()), "relative_error": err,
            "percdamp": damp, "seconds": round(seconds, 4), "tokens": tokens}
