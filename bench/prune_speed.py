"""Pruning wall time: rac vs llm-compressor's SparseGPT and vs a FLOP floor, in one run.

A randomly initialised Llama with the shapes of a 135M model (hidden 576, MLP 1536, 9 heads, 3 KV
heads), N layers, 32 x 512 calibration tokens, SparseGPT at 50%. Timings need no real weights.
Both tools get the same model weights and the same input_ids. The floor counts the FLOPs the
method must do at the matrix-multiply rate measured here, now:

- reference semantics (statistics from the dense block, then a pass through the pruned block):
  the dense block up to the input of its last linear, plus the whole pruned block;
- true-sequential (each group's statistics after the groups before it were pruned): one pass;
- both: one symmetric Hessian per distinct linear input (q/k/v share one, gate/up share one),
  tokens x d^2 FLOPs each (a symmetric rank-k update), and the SparseGPT solves.

    python bench/prune_speed.py --layers 6 [--skip-llmcompressor]
    python bench/prune_speed.py --layers 1 --profile-block   # where a block's forward goes

Prints a table of seconds and ratios; a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from rac.prune.batches import Batch
from rac.prune.config import PruneConfig
from rac.prune.engine import prune_model
from rac.prune.forward import input_stats
from rac.prune.masks import Target
from rac.prune.stats import relative_error


def matmul_rate(n: int = 2048, k: int = 576, repeats: int = 5) -> float:
    """fp32 GFLOP/s of X^T X for an (n, k) X, the shape of a Hessian update."""
    x = torch.randn(n * 8, k)
    torch.mm(x.T, x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(x.T, x)
    return 2 * n * 8 * k * k * repeats / (time.perf_counter() - t0) / 1e9


def floor_flops(cfg: LlamaConfig, tokens: int, seq: int, passes: float,
                blocksize: int = 128) -> dict:
    """FLOPs per model; ``passes``: forward passes per block (1.75 means one pass plus one
    stopped before the down projection)."""
    h, m, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = h * cfg.num_key_value_heads // cfg.num_attention_heads
    linears = [(h, h), (kv, h), (kv, h), (h, h), (m, h), (m, h), (h, m)]  # (out, in)
    fwd = sum(2 * o * i for o, i in linears) * tokens + 2 * tokens * seq * h  # + causal attention
    down = 2 * h * m * tokens
    first_pass = fwd - down if passes > 1 else fwd
    hess = sum(tokens * i * i for i in (h, h, h, m))  # q/k/v, o, gate/up, down inputs
    # SparseGPT: Cholesky-based inverse ~ in^3, per-column rank-1 updates within blocks
    # ~ 2 * out * in * blocksize, lazy block updates ~ 2 * out * in^2
    solve = sum(i**3 + 2 * o * i * blocksize + 2 * o * i * i for o, i in linears)
    forward = first_pass + (fwd if passes > 1 else 0)
    return {"forward": L * forward, "hessian": L * hess, "solve": L * solve}
def calib_batches(ids: torch.Tensor) -> list[Batch]:
    """rac's batches of 4 rows, no padding: the same tokens llm-compressor gets."""
    return [Batch(ids[i:i + 4], torch.ones_like(ids[i:i + 4]), torch.ones(ids[i:i + 4].shape))
            for i in range(0, len(ids), 4)]


def run_rac(lm, ids: torch.Tensor, true_sequential: bool = False, staged: bool = True,
            device: str = "cpu", split: dict | None = None) -> float:
    """Seconds to prune ``lm`` with rac; ``split`` (if given) receives the seconds spent in
    Hessian updates and in SparseGPT solves (the rest is forward passes and data movement),
    read from a cProfile of the run (which adds a little overhead to the run it measures)."""
    import cProfile
    import pstats

    batches = calib_batches(ids)
    cfg = PruneConfig("sparsegpt", Target(0.5), true_sequential=true_sequential, staged=staged,
                      device=device)
    profile = cProfile.Profile() if split is not None else None
    t0 = time.perf_counter()
    if profile:
        profile.enable()
    prune_model(lm, lm.model.layers, batches, cfg, progress=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if profile:
        profile.disable()
        cumulative: dict[str, float] = {}
        for (path, _, name), row in pstats.Stats(profile).stats.items():
            key = f"{path.rsplit('/', 1)[-1]}:{name}"  # stats.py:add sums every statistic's add
            cumulative[key] = cumulative.get(key, 0.0) + row[3]
        split.update(hessian=cumulative.get("stats.py:add", 0.0),
                     solve=cumulative.get("sparsegpt.py:sparsegpt_group", 0.0))
    return seconds


def run_llmcompressor(dense, ids: torch.Tensor):
    """llm-compressor on a copy of ``dense`` loaded from disk (it wants a model path and a
    processor); returns (seconds, the pruned model). It uses the GPU when there is one."""
    import tempfile

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    from rac.toy.tokenizer import build_tokenizer  # any processor: the ids are given

    tmp = tempfile.mkdtemp()
    dense.save_pretrained(tmp)
    build_tokenizer().save_pretrained(tmp)
    lm = AutoModelForCausalLM.from_pretrained(tmp, dtype=dense.dtype)

    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * ids.shape[1]] * len(ids)})
    t0 = time.perf_counter()
    oneshot(model=lm, dataset=ds, processor=tmp,
            recipe=SparseGPTModifier(sparsity=0.5, targets=["Linear"], ignore=["re:.*lm_head"]),
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1], pipeline="sequential")
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, lm


def layer_errors(dense, pruned, ids) -> float:
    """Mean relative error of block 0's linears on the dense inputs (both tools, same H)."""
    linears = {n: lin for n, lin in dense.model.layers[0].named_modules()
               if isinstance(lin, torch.nn.Linear)}
    stats = input_stats(dense, linears, calib_batches(ids[:8]))
    block_p = pruned.model.layers[0]
    return sum(relative_error(lin.weight.detach(), block_p.get_submodule(n).weight.detach(),
                              stats[n].H) for n, lin in linears.items()) / len(linears)


def profile_block(lm, ids: torch.Tensor) -> None:
    """Where one block's forward over all calibration tokens spends its time, by operator."""
    from torch.profiler import profile

    from rac.prune.forward import capture_block_inputs

    batches = calib_batches(ids)
    states = capture_block_inputs(lm, lm.model.layers, batches, "cpu")
    block = lm.model.layers[0]
    with torch.inference_mode():
        for h, kw in states[:1]:
            block(h, **kw)
        with profile() as prof:
            for h, kw in states:
                block(h, **kw)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-llmcompressor", action="store_true")
    ap.add_argument("--profile-block", action="store_true",
                    help="only print an operator profile of one block's forward")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=a.layers, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(0)
    dense = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (a.samples, a.seq), generator=torch.Generator().manual_seed(0))
    if a.profile_block:
        profile_block(dense, ids)
        return
    rate = matmul_rate()
    tokens = a.samples * a.seq
    floors = {p: floor_flops(cfg, tokens, a.seq, p) for p in (1.75, 1.0)}
    secs = {p: sum(f.values()) / (rate * 1e9) for p, f in floors.items()}
    rows = []  # (tool, semantics passes, seconds, error, split)
    for name, seq, staged in (("rac prune", False, True),
                              ("rac prune --true-sequential (staged, one pass)", True, True),
                              ("rac prune --true-sequential (one pass per group)", True, False)):
        ours = copy.deepcopy(dense)
        split: dict = {}
        t = run_rac(ours, ids, seq, staged, split=split)
        rows.append((name, 1.0 if seq else 1.75, t, layer_errors(dense, ours, ids), split))
        del ours
    if not a.skip_llmcompressor:
        t_lc, theirs = run_llmcompressor(dense, ids)
        rows.append(("llm-compressor oneshot SparseGPTModifier", 1.75, t_lc,
                     layer_errors(dense, theirs, ids), {}))
    print(f"\n{a.layers} layers, {a.samples} x {a.seq} tokens, {torch.get_num_threads()} threads; "
          f"matmul rate {rate:.1f} GFLOP/s")
    for p, f in floors.items():
        print(f"floor with {p:g} passes: {secs[p]:.1f} s (forward {f['forward'] / 1e9:.0f}, "
              f"hessian {f['hessian'] / 1e9:.0f}, solve {f['solve'] / 1e9:.0f} GFLOP)")
    lc = rows[-1][2] if not a.skip_llmcompressor else None
    print("| tool | seconds | x its floor | llm-compressor / tool | block-0 mean relative error "
          "| Hessians / solves / rest (s) |")
    print("|---|---|---|---|---|---|")
    for name, passes, t, err, split in rows:
        vs = f"{lc / t:.2f}" if lc else "-"
        parts = (f"{split['hessian']:.1f} / {split['solve']:.1f} / "
                 f"{t - split['hessian'] - split['solve']:.1f}") if split else "-"
        print(f"| {name} | {t:.1f} | {t / secs[passes]:.2f} | {vs} | {err:.4f} | {parts} |")
    print("floor split, reference semantics (s): forward "
          f"{floors[1.75]['forward'] / (rate * 1e9):.1f}, Hessians "
          f"{floors[1.75]['hessian'] / (rate * 1e9):.1f}, solves {floors[1.75]['solve'] / (rate * 1e9):.1f}")


if __name__ == "__main__":
    main()
