"""bf16 against fp32 linear products on this CPU, at the shapes of Qwen2.5-Coder-0.5B's layers and
the row counts of decoding (1, 64, 256) and of a prefill (2,048), in one run:

    python bench/cpu_dtype.py --threads 2

What it decides: vLLM's 'auto' dtype is bf16 for an fp32 checkpoint on a CPU; a CPU without
bf16 products (no AVX512-BF16 or AMX-BF16) emulates them, and where bf16 is slower rac's 'auto'
asks vLLM for float32 (``rac.vllm_support.vllm_dtype``). Prints GFLOP/s per shape and dtype and the
bf16 / fp32 time ratio, and whether the CPU has bf16 products.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rac.vllm_support import cpu_bf16

SHAPES = {"q/o proj": (896, 896), "gate/up": (4864, 896), "down": (896, 4864),
          "lm_head": (151936, 896)}


def seconds(x: torch.Tensor, w: torch.Tensor, repeat: int) -> float:
    F.linear(x, w)  # warm-up: packing, first-touch
    t0 = time.perf_counter()
    for _ in range(repeat):
        F.linear(x, w)
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 64, 256, 2048])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"bf16 products on this CPU: {cpu_bf16()}; torch threads {torch.get_num_threads()}")
    print("| layer | rows | fp32 GFLOP/s | bf16 GFLOP/s | bf16 / fp32 time |")
    print("|---|---|---|---|---|")
    ratios = []
    for name, (out, inp) in SHAPES.items():
        for rows in a.rows:
            if name == "lm_head" and rows > 256:
                continue  # the head runs on the last token of each sequence only
            flops = 2 * rows * out * inp
            repeat = max(1, int(2e9 // flops))
            t = {dt: seconds(torch.randn(rows, inp, dtype=dt), torch.randn(out, inp, dtype=dt),
                             repeat) for dt in (torch.float32, torch.bfloat16)}
            ratio = t[torch.bfloat16] / t[torch.float32]
            ratios.append(ratio)
            print(f"| {name} | {rows} | {flops / t[torch.float32] / 1e9:.1f} | "
                  f"{flops / t[torch.bfloat16] / 1e9:.1f} | {ratio:.2f} |")
    geo = torch.tensor(ratios).log().mean().exp().item()
    print(f"\nbf16 / fp32 time, geometric mean over shapes: {geo:.2f}")


if __name__ == "__main__":
    main()
