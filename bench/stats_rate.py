"""Statistics accumulation vs the machine's limit, and memory flat in calibration tokens.

1. H = X^T X accumulated batch by batch by ``LayerStats`` (masked rows selected, fp32, in-place
   rank-k updates of the upper triangle's row blocks) vs one plain ``torch.mm`` of the same shape,
   measured now: the fraction of the machine's fp32 matrix-multiply rate that the statistics
   reach (FLOPs they perform / time), and their time against the full product's.
2. Peak resident memory of ``rac prune`` (a subprocess each) with 1x and 4x the calibration
   tokens on the same model, and peak memory relative to the model's own size.

    python bench/stats_rate.py [--width 576] [--tokens 16384]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from rac.prune.stats import LayerStats


def gemm_rate(x: torch.Tensor, repeats: int) -> float:
    torch.mm(x.T, x)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(x.T, x)
    return 2 * x.shape[0] * x.shape[1] ** 2 * repeats / (time.perf_counter() - t0) / 1e9


def performed_flops(tokens: int, d: int) -> int:
    """FLOPs of LayerStats.add's row-block updates of the upper triangle."""
    return sum(2 * tokens * (j - i) * (d - i) for i, j in LayerStats.row_blocks(d))


def stats_rate(x: torch.Tensor, batch: int, repeats: int) -> tuple[float, float]:
    """(performed GFLOP/s, seconds per full pass over x)"""
    keep = torch.ones(batch, dtype=torch.bool)
    keep[::50] = False  # a little padding, as in real batches
    t0 = time.perf_counter()
    kept = 0
    for _ in range(repeats):
        s = LayerStats(x.shape[1], "cpu")
        for i in range(0, x.shape[0], batch):
            chunk = x[i:i + batch]
            m = keep[:len(chunk)]
            s.add(chunk[m])
            kept += int(m.sum())
    seconds = time.perf_counter() - t0
    return performed_flops(kept, x.shape[1]) / seconds / 1e9, seconds / repeats


def peak_rss_of_prune(model: Path, calib_tokens: int, work: Path) -> float:
    calib = work / f"calib-{calib_tokens}"
    subprocess.run([sys.executable, "-m", "rac.cli", "calib", "--source", "generic", "--tokenizer",
                    str(model), "--text", str(work / "text.txt"), "--budget-tokens",
                    str(calib_tokens), "--pack", "512", "--out", str(calib)], check=True,
                   capture_output=True)
    out = work / f"pruned-{calib_tokens}"
    subprocess.run([sys.executable, "-m", "rac.cli", "prune", str(model), "--calib", str(calib),
                    "--method", "sparsegpt", "--sparsity", "0.5", "--out", str(out)], check=True,
                   capture_output=True)
    return json.loads((out / "prune_report.json").read_text())["totals"]["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=576)
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=4)
    a = ap.parse_args()
    x = torch.randn(a.tokens, a.width)
    peak = gemm_rate(x, 5)
    full_s = 2 * a.tokens * a.width ** 2 / (peak * 1e9)
    ours, ours_s = stats_rate(x, a.batch, 3)
    print(f"{torch.get_num_threads()} threads, X {a.tokens} x {a.width}")
    print("| measurement | GFLOP/s performed | fraction of torch.mm rate | seconds per pass |")
    print("|---|---|---|---|")
    print(f"| torch.mm(X^T, X), one call | {peak:.1f} | 1.00 | {full_s:.3f} |")
    print(f"| LayerStats.add, masked batches of {a.batch} | {ours:.1f} | {ours / peak:.2f} | "
          f"{ours_s:.3f} ({full_s / ours_s:.2f}x faster) |")

    from transformers import LlamaConfig, LlamaForCausalLM

    from rac.calibrate.generic import corpus
    from rac.toy.tokenizer import build_tokenizer

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tok = build_tokenizer()
        model = work / "model"
        lm = LlamaForCausalLM(LlamaConfig(
            vocab_size=len(tok), hidden_size=a.width, intermediate_size=int(a.width * 8 / 3),
            num_hidden_layers=a.layers, num_attention_heads=9, num_key_value_heads=3,
            pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
        lm.save_pretrained(model)
        tok.save_pretrained(model)
        size_mb = sum(p.numel() * p.element_size() for p in lm.parameters()) / 2**20
        (work / "text.txt").write_text("\n\n".join(corpus(6000, 0)))
        small = peak_rss_of_prune(model, 8192, work)
        big = peak_rss_of_prune(model, 4 * 8192, work)
    print()
    print(f"| calibration tokens | peak RSS (MB) | x model size ({size_mb:.0f} MB) |")
    print("|---|---|---|")
    print(f"| 8192 | {small:.0f} | {small / size_mb:.1f} |")
    print(f"| 32768 | {big:.0f} | {big / size_mb:.1f} |")
    print(f"growth from 1x to 4x tokens: {100 * (big / small - 1):.1f}%")


if __name__ == "__main__":
    main()
