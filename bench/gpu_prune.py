"""The pruning engine on a GPU at realistic sizes: randomly initialised Qwen2 models with the layer
shapes of DeepSeek-R1-Distill-Qwen-1.5B and -7B (timings need no real weights).

For each: the model sits on the CPU in bf16, one block at a time goes to the GPU (``--device
cuda``), SparseGPT 50% over all decoder linears, calibration tokens as given. Reports seconds per
block split into statistics (dense pass with hooks), solves and propagation, peak GPU memory, and
the same work's FLOP floor at the bf16/fp32 matmul rates measured in the same run. Also checks
that SparseGPT on the GPU agrees with the CPU on one layer.

    PYTHONPATH=src python3 bench/gpu_prune.py --layers 4 --samples 32 --seq 2048

Every line printed names the card.
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from rac.prune.engine import Batch, PruneConfig, prune_model
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
    a = ap.parse_args()
    card = torch.cuda.get_device_name()
    bf16, fp32 = rate(torch.bfloat16), rate(torch.float32)
    print(f"[{card}] bf16 matmul {bf16:.0f} TFLOP/s, fp32 {fp32:.0f} TFLOP/s (TF32 off)")

    # correctness: one layer, GPU vs CPU
    torch.manual_seed(0)
    W = torch.randn(512, 1024)
    X = torch.randn(4096, 1024) @ (torch.eye(1024) + 0.1 * torch.randn(1024, 1024))
    H = X.T @ X
    cpu, _ = sparsegpt(W, H, Target(0.5))
    gpu, _ = sparsegpt(W.cuda(), H.cuda(), Target(0.5))
    agree = float(((cpu == 0) == (gpu.cpu() == 0)).float().mean())
    print(f"[{card}] SparseGPT mask agreement GPU vs CPU on a 512x1024 layer: {agree:.4f}, "
          f"max weight difference {float((cpu - gpu.cpu()).abs().max()):.2e}")

    for name, shape in SHAPES.items():
        shape = dict(shape)
        full = shape.pop("full_layers")
        cfg = Qwen2Config(vocab_size=152064, num_hidden_layers=a.layers, max_position_embeddings=4096,
                          **shape)
        with torch.device("cpu"):
            lm = Qwen2ForCausalLM(cfg).to(torch.bfloat16).eval()
        ids = torch.randint(0, cfg.vocab_size, (a.samples, a.seq))
        batches = [Batch(ids[i:i + 4], torch.ones_like(ids[i:i + 4]), torch.ones(4, a.seq))
                   for i in range(0, a.samples, 4)]
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        report = prune_model(lm, lm.model.layers, batches,
                             PruneConfig("sparsegpt", Target(0.5), device="cuda"), progress=False)
        torch.cuda.synchronize()
        total = time.perf_counter() - t0
        h, m = cfg.hidden_size, cfg.intermediate_size
        kv = h * cfg.num_key_value_heads // cfg.num_attention_heads
        linears = [(h, h), (kv, h), (kv, h), (h, h), (m, h), (m, h), (h, m)]
        tokens = a.samples * a.seq
        fwd = 2 * tokens * sum(o * i for o, i in linears) + 4 * tokens * a.seq * h
        hess = 2 * tokens * sum(i * i for _, i in linears)
        solve = sum(i**3 + 2 * o * i * i for o, i in linears)
        floor = a.layers * (2 * fwd / (bf16 * 1e12) + (hess + solve) / (fp32 * 1e12))
        solve_s = sum(r["seconds"] for r in report)
        print(f"[{card}] {name} shapes, {a.layers} of {full} layers, {a.samples} x {a.seq} tokens: "
              f"{total:.1f} s ({total / a.layers:.2f} s/block; statistics+solves {solve_s:.1f} s), "
              f"floor {floor:.1f} s -> {total / floor:.1f}x floor; peak GPU memory "
              f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB; whole model ~"
              f"{total / a.layers * full / 60:.1f} min; sparsity "
              f"{sum(r['sparsity'] for r in report) / len(report):.4f}")
        del lm


if __name__ == "__main__":
    main()
