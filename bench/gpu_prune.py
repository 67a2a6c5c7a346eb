"""The pruning comparisons of ``prune_speed.py`` on a GPU at realistic sizes: randomly initialised
Qwen2 models with the layer shapes of DeepSeek-R1-Distill-Qwen-1.5B and -7B (timings need no real
weights; the vocabulary is cut to 32k, which only the embedding sees).

For each shape, SparseGPT 50% over all decoder linears with the model on the CPU in bf16 and one
block at a time on the GPU: rac at the reference semantics, rac true-sequential (staged, one
pass per block), and llm-compressor's ``oneshot`` + ``SparseGPTModifier`` when it is installed
(wheels can be carried to a device machine), each against its FLOP floor at the bf16 (forward)
and fp32 (Hessians, solves) matmul rates measured in the same run. Also checks that SparseGPT on
the GPU agrees with the CPU on one layer.

    PYTHONPATH=src python3 bench/gpu_prune.py --layers 4 --samples 32 --seq 2048

Every line printed names the card.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from prune_speed import floor_flops, run_llmcompressor, run_rac
from transformers import Qwen2Config, Qwen2ForCausalLM

from rac.prune.masks import Target
from rac.prune.sparsegpt import sparsegpt

SHAPES = {
    "R1-Distill-Qwen-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                                 num_key_value_heads=2, full_layers=28),
    "R1-Distill-Qwen-7B": dict(hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                               num_key_value_heads=4, full_layers=28),
}


def rate(dtype: torch.dtype, n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ a
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        a @ a
    torch.cuda.synchronize()
    return 2 * n**3 * 10 / (time.perf_counter() - t0) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--skip-llmcompressor", action="store_true")
    a = ap.parse_args()
    card = torch.cuda.get_device_name()
    bf16, fp32 = rate(torch.bfloat16), rate(torch.float32)
    print(f"[{card}] bf16 matmul {bf16:.0f} TFLOP/s, fp32 {fp32:.0f} TFLOP/s (TF32 off)", flush=True)

    # correctness: one layer, GPU vs CPU
    torch.manual_seed(0)
    W = torch.randn(512, 1024)
    X = torch.randn(4096, 1024) @ (torch.eye(1024) + 0.1 * torch.randn(1024, 1024))
    H = X.T @ X
    cpu, _ = sparsegpt(W, H, Target(0.5))
    gpu, _ = sparsegpt(W.cuda(), H.cuda(), Target(0.5))
    agree = float(((cpu == 0) == (gpu.cpu() == 0)).float().mean())
    print(f"[{card}] SparseGPT mask agreement GPU vs CPU on a 512x1024 layer: {agree:.4f}, "
          f"max weight difference {float((cpu - gpu.cpu()).abs().max()):.2e}", flush=True)

    try:
        import llmcompressor  # noqa: F401
        have_lc = not a.skip_llmcompressor
    except ImportError:
        have_lc = False
        print(f"[{card}] llm-compressor is not installed: rac rows only")

    for name in a.shapes:
        shape = dict(SHAPES[name])
        full = shape.pop("full_layers")
        cfg = Qwen2Config(vocab_size=32768, num_hidden_layers=a.layers, max_position_embeddings=4096,
                          tie_word_embeddings=True, **shape)
        torch.manual_seed(0)
        dense = Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
        ids = torch.randint(0, cfg.vocab_size, (a.samples, a.seq))
        tokens = a.samples * a.seq
        floors = {}
        for passes in (1.75, 1.0):
            f = floor_flops(cfg, tokens, a.seq, passes)
            floors[passes] = f["forward"] / (bf16 * 1e12) + (f["hessian"] + f["solve"]) / (fp32 * 1e12)
        rows = []
        for label, seq in (("rac prune", False), ("rac prune --true-sequential (staged)", True)):
            lm = copy.deepcopy(dense)
            torch.cuda.reset_peak_memory_stats()
            t = run_rac(lm, ids, true_sequential=seq, device="cuda")
            rows.append((label, 1.0 if seq else 1.75, t, torch.cuda.max_memory_allocated()))
            del lm
        if have_lc:
            torch.cuda.reset_peak_memory_stats()
            t, lm = run_llmcompressor(dense, ids)
            rows.append(("llm-compressor oneshot SparseGPTModifier", 1.75, t,
                         torch.cuda.max_memory_allocated()))
            del lm
        lc = rows[-1][2] if have_lc else None
        print(f"[{card}] {name} shapes, {a.layers} of {full} layers, {a.samples} x {a.seq} tokens; "
              f"floors {floors[1.75]:.1f} s (reference) / {floors[1.0]:.1f} s (one pass)")
        for label, passes, t, mem in rows:
            vs = f", llm-compressor / this {lc / t:.2f}x" if lc else ""
            print(f"[{card}] {name}: {label}: {t:.1f} s ({t / a.layers:.2f} s/block, whole model "
                  f"~{t / a.layers * full / 60:.1f} min), {t / floors[passes]:.1f}x its floor, "
                  f"peak GPU memory {mem / 2**30:.1f} GiB{vs}", flush=True)
        del dense


if __name__ == "__main__":
    main()
