"""The block-by-block pruning driver: capture, hook, prune, propagate.

1. Capture the inputs of decoder block 0 with *all* its forward kwargs (attention mask, position
   ids, rotary embeddings) by stopping the model's forward at block 0.
2. For each decoder block: move it to the device, hook the targeted linears, run the calibration
   batches through it to accumulate statistics (masked tokens only), prune the linears, then run
   the batches through the *pruned* block to get the next block's inputs (the reference
   semantics: two passes per block; the statistics pass stops at the last hooked linear, so the
   dense block's down projection is never computed).
3. With ``true_sequential`` the statistics of each sublayer group (q/k/v, o, gate/up, down) come
   from the groups before it already pruned. For Llama/Qwen2-style blocks this is one *staged*
   pass: every batch goes through one stage, the group after that stage is pruned, then every
   batch goes through the next stage (see ``_staged_block``). Other blocks get one pass per group.

Only one block and its activations sit on the device; the rest of the model stays on the CPU and
activations between blocks are kept on the CPU in the model's dtype, overwritten in place as each
block's outputs replace its inputs (one copy, whatever the number of blocks).
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
from rac.prune.sparsegpt import CholeskyError, SparseGPTConfig, sparsegpt_group
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


def _add(stats: LayerStats, x: torch.Tensor, weight: torch.Tensor) -> None:
    """Feed the kept tokens (weight > 0) of activations ``x`` (..., d) into ``stats``."""
    x = x.reshape(-1, x.shape[-1])
    keep = weight > 0
    if bool(keep.all()):  # no padding: skip the copies that selecting rows would make
        stats.add(x, None if bool((weight == 1).all()) else weight)
    else:
        stats.add(x[keep], weight[keep])


@contextmanager
def _collect(linears: dict[str, torch.nn.Linear], stats: dict[str, LayerStats],
             current: dict, stop_at: str) -> Iterator[None]:
    """Hooks that feed each linear's inputs (kept tokens only) into its statistics; the forward
    stops at ``stop_at``'s input, since nothing after it is needed for the statistics."""
    def hook_for(name: str) -> Callable:
        def hook(module, args):
            _add(stats[name], args[0], current["weight"])
            if name == stop_at:
                raise _Stop
        return hook

    handles = [lin.register_forward_pre_hook(hook_for(n)) for n, lin in linears.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def prune_weights(Ws: list[torch.Tensor], stats: LayerStats | None, cfg: PruneConfig
                  ) -> tuple[list[torch.Tensor], float | None]:
    """Prune weights that read the same inputs (one group) with ``cfg.method``; returns the
    pruned weights and SparseGPT's dampening (None for the others)."""
    if cfg.method == "magnitude":
        return [magnitude(W, cfg.target) for W in Ws], None
    if stats is None or stats.tokens == 0:
        raise ValueError(f"{cfg.method} needs calibration statistics; none reached this layer")
    if cfg.method == "wanda":
        return [wanda(W, stats.col_norm, cfg.target) for W in Ws], None
    return sparsegpt_group(Ws, stats.H, cfg.target, cfg.sparsegpt)


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
    weights = [b.weight.reshape(-1) for b in batches]
    bar = tqdm(range(n_layers), desc=f"prune {cfg.method} {cfg.target}", unit="block",
               disable=not progress)
    staged = cfg.true_sequential and staged_forward_matches(blocks[0], states[0], dev)
    for i in bar:
        block = blocks[i].to(dev)
        lins = targeted.get(i, {})
        # The linears of a group read the same input (q/k/v the normed hidden states, gate/up
        # the normed residual), so one set of statistics serves the whole group.
        groups = [g for g in ([n for n in grp if n in lins] for grp in SEQUENTIAL_GROUPS) if g]
        if lins and staged:
            _staged_block(i, block, groups, lins, states, weights, cfg, report)
        else:
            passes = [[g] for g in groups] if cfg.true_sequential else [groups] if groups else []
            for pass_groups in passes:
                stats = {g[0]: LayerStats(lins[g[0]].in_features, dev) for g in pass_groups}
                t0 = time.perf_counter()
                current: dict = {}
                with _collect({g[0]: lins[g[0]] for g in pass_groups}, stats, current,
                              stop_at=pass_groups[-1][0]):
                    for (hidden, kwargs), w in zip(states, weights):
                        current["weight"] = w.to(dev)
                        with suppress(_Stop):
                            block(hidden.to(dev), **_to(kwargs, dev))
                per_linear = (time.perf_counter() - t0) / sum(map(len, pass_groups))
                for g in pass_groups:
                    _prune_group(i, g, lins, stats[g[0]], per_linear * len(g), cfg, report)
            if i + 1 < n_layers:
                for hidden, kwargs in states:
                    out = block(hidden.to(dev), **_to(kwargs, dev))
                    hidden.copy_(out[0] if isinstance(out, tuple) else out)
        blocks[i].to("cpu")
    return report


def _prune_group(i: int, group: list[str], lins: dict[str, torch.nn.Linear], stats: LayerStats,
                 stat_s: float, cfg: PruneConfig, report: list[dict]) -> None:
    """Prune the linears of one group, which share the statistics ``stats`` (collected in
    ``stat_s`` seconds; the report shares all the group's time evenly between its linears)."""
    if not torch.isfinite(stats.H).all():
        raise ValueError(f"block {i} {group[0]}: calibration statistics hold NaN or Inf (the "
                         "activations overflowed); check the model's dtype")
    t0 = time.perf_counter()
    Ws = [lins[n].weight.data for n in group]
    try:
        pruned, damp = prune_weights(Ws, stats, cfg)
    except CholeskyError as e:
        raise ValueError(f"block {i} {', '.join(group)}: {e}; raise --percdamp or add calibration "
                         "tokens") from e
    errors = [relative_error(W, W_hat, stats.H) for W, W_hat in zip(Ws, pruned)]
    for W, W_hat in zip(Ws, pruned):
        W.copy_(W_hat)
    each = (time.perf_counter() - t0 + stat_s) / len(group)
    for n, W, err in zip(group, Ws, errors):
        report.append(_row(i, n, W, err, damp, each, stats.tokens))


# -- the staged block forward (Llama/Qwen2 family) -------------------------------------------------
#
# A Llama/Qwen2 decoder block computes, with a and m the inputs of o_proj and down_proj:
#     x = input_layernorm(h);  a = attention(q(x), k(x), v(x));  r = h + o_proj(a)
#     y = post_attention_layernorm(r);  m = act(gate_proj(y)) * up_proj(y);  out = r + down_proj(m)
# Running it stage by stage over all batches lets each group be pruned as soon as its inputs are
# known, and the next stage then sees the pruned group: true-sequential in one pass. The attention
# and the MLP are called as the model's own modules, stopped at o_proj / down_proj by a hook, so
# rotary embeddings, GQA, q/k norms and the attention kernel stay the model's.


def _input_of(linear: torch.nn.Module, run: Callable[[], object]) -> torch.Tensor:
    """The input ``linear`` receives while ``run()`` executes; ``run`` stops right there."""
    got: list[torch.Tensor] = []

    def grab(module, args):
        got.append(args[0])
        raise _Stop

    handle = linear.register_forward_pre_hook(grab)
    try:
        with suppress(_Stop):
            run()
    finally:
        handle.remove()
    if not got:
        raise ValueError("the staged forward never reached " + type(linear).__name__)
    return got[0]


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
        h, kwargs = state[0].to(dev), _to(state[1], dev)
        out = block(h, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
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
        print(f"note: {type(block).__name__} is not a Llama/Qwen2-style block; true-sequential "
              "runs one forward pass per sublayer group instead of one staged pass")
    return ok


def _stash(dev: str, rows: int, widths: list[int], dtype: torch.dtype) -> str:
    """Where a staged block keeps its activations (``rows`` tokens of each width): on a GPU when
    they take under half of its free memory, else on the CPU."""
    if torch.device(dev).type != "cuda":
        return "cpu"
    need = rows * sum(widths) * torch.empty((), dtype=dtype).element_size()
    return dev if need < torch.cuda.mem_get_info(torch.device(dev))[0] // 2 else "cpu"


def _staged_block(i: int, block: torch.nn.Module, groups: list[list[str]],
                  lins: dict[str, torch.nn.Linear], states: list[tuple[torch.Tensor, dict]],
                  weights: list[torch.Tensor], cfg: PruneConfig, report: list[dict]) -> None:
    """Prune one block true-sequentially in one staged pass; leaves its outputs in ``states``.
    Stage activations (the inputs of o_proj, then of down_proj) are held for all batches, in the
    model's dtype, on the GPU when they fit (see ``_stash``)."""
    dev = cfg.device
    by_leader = {g[0]: g for g in groups}
    kwargs_dev = [_to(kw, dev) for _, kw in states]  # small: masks and rotary tables
    rows = sum(h.numel() // h.shape[-1] for h, _ in states)
    mlp_width = block.mlp.down_proj.in_features
    home = _stash(dev, rows, [states[0][0].shape[-1], block.self_attn.o_proj.in_features,
                              mlp_width], states[0][0].dtype)
    hs = [h.to(home) for h, _ in states]  # the block's inputs, replaced in place by r, then out

    def stage(leader: str, inputs: Callable[[int], torch.Tensor], keep: bool) -> list[torch.Tensor]:
        """Compute the leader's input for every batch (kept if ``keep``), then prune its group."""
        if leader not in by_leader and not keep:
            return []
        t0 = time.perf_counter()
        stats = LayerStats(lins[leader].in_features, dev) if leader in by_leader else None
        kept = []
        for k, w in enumerate(weights):
            x = inputs(k)
            if stats is not None:
                _add(stats, x, w.to(dev))
            if keep:
                kept.append(x.to(home))
        if stats is not None:
            _prune_group(i, by_leader[leader], lins, stats, time.perf_counter() - t0, cfg, report)
        return kept

    stage(ATTN[0], lambda k: block.input_layernorm(hs[k].to(dev)), keep=False)
    a = stage(ATTN[3], lambda k: _attn_input(block, hs[k].to(dev), kwargs_dev[k]),
              keep=True)
    for h, ak in zip(hs, a):
        h.add_(block.self_attn.o_proj(ak.to(dev)).to(home))  # h is now r
    del a
    stage(MLP[0], lambda k: block.post_attention_layernorm(hs[k].to(dev)), keep=False)
    m = stage(MLP[2], lambda k: _mlp_input(block, hs[k].to(dev)), keep=True)
    for (out, _), r, mk in zip(states, hs, m):
        r.add_(block.mlp.down_proj(mk.to(dev)).to(home))
        if r is not out:
            out.copy_(r)


def _row(layer: int, name: str, W: torch.Tensor, err: float | None, damp: float | None,
         seconds: float, tokens: int) -> dict:
    return {"layer": layer, "name": name, "shape": list(W.shape),
            "sparsity": float((W == 0).float().mean()), "relative_error": err,
            "percdamp": damp, "seconds": round(seconds, 4), "tokens": tokens}
