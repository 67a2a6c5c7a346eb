"""Pruning wall time: rac vs llm-compressor's SparseGPT and vs a FLOP floor, in one run.

A randomly initialised Llama with the shapes of a 135M model (hidden 576, MLP 1536, 9 heads, 3 KV
heads), N layers, 32 x 512 calibration tokens, SparseGPT at 50%. Timings need no real weights.
Both tools get the same model weights and the same input_ids. The floor counts the FLOPs the
method must do (two forward passes per block for the reference semantics, the Hessian rank-k
updates and the SparseGPT solves) at the matrix-multiply rate measured here, now.

    python bench/prune_speed.py --layers 6 [--skip-llmcompressor]

Prints a table of seconds and ratios; a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rac.prune.engine import Batch, PruneConfig, prune_model
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


def floor_flops(cfg: LlamaConfig, tokens: int, seq: int, blocksize: int = 128) -> dict:
    h, m, L = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    kv = h * cfg.num_key_value_heads // cfg.num_attention_heads
    linears = [(h, h), (kv, h), (kv, h), (h, h), (m, h), (m, h), (h, m)]  # (out, in)
    fwd = sum(2 * o * i for o, i in linears) * tokens + 4 * tokens * seq * h  # + attention
    # Hessians: one per distinct input (q/k/v share one, gate/up share one) but tools compute
    # one per linear: count what both do, 2 * tokens * in^2 each
    hess = sum(2 * tokens * i * i for _, i in linears)
    # SparseGPT: Cholesky-based inverse ~ in^3, per-column rank-1 updates within blocks
    # ~ 2 * out * in * blocksize, lazy block updates ~ 2 * out * in^2
    solve = sum(i**3 + 2 * o * i * blocksize + 2 * o * i * i for o, i in linears)
    return {"forward": 2 * L * fwd, "hessian": L * hess, "solve": L * solve}


def run_rac(lm, ids: torch.Tensor) -> float:
    batches = [Batch(ids[i:i + 4], torch.ones_like(ids[i:i + 4]),
                     torch.ones(ids[i:i + 4].shape)) for i in range(0, len(ids), 4)]
    t0 = time.perf_counter()
    prune_model(lm, lm.model.layers, batches, PruneConfig("sparsegpt", Target(0.5)), progress=False)
    return time.perf_counter() - t0


def run_llmcompressor(dense, ids: torch.Tensor):
    """llm-compressor on a copy of ``dense`` loaded from disk (it wants a model path and a
    processor); returns (seconds, the pruned model)."""
    import tempfile

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.pruning import SparseGPTModifier

    from rac.toy.tokenizer import build_tokenizer  # any processor: the ids are given

    tmp = tempfile.mkdtemp()
    dense.save_pretrained(tmp)
    build_tokenizer().save_pretrained(tmp)
    lm = LlamaForCausalLM.from_pretrained(tmp)

    ds = Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * ids.shape[1]] * len(ids)})
    t0 = time.perf_counter()
    oneshot(model=lm, dataset=ds, processor=tmp,
            recipe=SparseGPTModifier(sparsity=0.5, targets=["Linear"], ignore=["lm_head"]),
            num_calibration_samples=len(ids), max_seq_length=ids.shape[1], pipeline="sequential")
    return time.perf_counter() - t0, lm


def layer_errors(dense, pruned, ids) -> float:
    """Mean relative error of block 0's linears on the dense inputs (both tools, same H)."""
    from rac.prune.stats import LayerStats

    errs = []
    block_d, block_p = dense.model.layers[0], pruned.model.layers[0]
    for name, lin in block_d.named_modules():
        if not isinstance(lin, torch.nn.Linear):
            continue
        stats = LayerStats(lin.in_features, "cpu")
        h = lin.register_forward_pre_hook(
            lambda m, a, s=stats: s.add(a[0].reshape(-1, a[0].shape[-1])))
        with torch.no_grad():
            dense(input_ids=ids[:8])
        h.remove()
        errs.append(relative_error(lin.weight, block_p.get_submodule(name).weight, stats.H))
    return sum(errs) / len(errs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--skip-llmcompressor", action="store_true")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                      num_hidden_layers=a.layers, num_attention_heads=9, num_key_value_heads=3,
                      max_position_embeddings=2048, tie_word_embeddings=True)
    torch.manual_seed(0)
    dense = LlamaForCausalLM(cfg).eval()
    ids = torch.randint(0, cfg.vocab_size, (a.samples, a.seq), generator=torch.Generator().manual_seed(0))
    rate = matmul_rate()
    flops = floor_flops(cfg, a.samples * a.seq, a.seq)
    floor = sum(flops.values()) / (rate * 1e9)
    ours = copy.deepcopy(dense)
    t_rac = run_rac(ours, ids)
    rows = [("rac prune (reference semantics)", t_rac, layer_errors(dense, ours, ids))]
    if not a.skip_llmcompressor:
        t_lc, theirs = run_llmcompressor(dense, ids)
        rows.append(("llm-compressor oneshot SparseGPT", t_lc, layer_errors(dense, theirs, ids)))
    print(f"\n{a.layers} layers, {a.samples} x {a.seq} tokens, {torch.get_num_threads()} threads; "
          f"matmul rate {rate:.1f} GFLOP/s; floor {floor:.1f} s "
          f"(forward {flops['forward'] / 1e9:.0f}, hessian {flops['hessian'] / 1e9:.0f}, "
          f"solve {flops['solve'] / 1e9:.0f} GFLOP)")
    print("| tool | seconds | x floor | block-0 mean relative error |")
    print("|---|---|---|---|")
    for name, t, err in rows:
        print(f"| {name} | {t:.1f} | {t / floor:.2f} | {err:.4f} |")
    if len(rows) > 1:
        print(f"speed-up of rac over llm-compressor: {rows[1][1] / rows[0][1]:.2f}x")


if __name__ == "__main__":
    main()
