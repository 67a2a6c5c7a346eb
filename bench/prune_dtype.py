"""`rac prune` (or `rac quantize`) in bfloat16 vs float32 on one checkpoint and one calibration
set: wall time and peak RSS of each run in a fresh process, and what bf16 costs in layer error.

    python bench/prune_dtype.py MODEL --calib DIR [--work DIR] [--threads N] [-- rac prune options...]

With ``--dtype bfloat16`` the weights and every forward pass (block inputs, propagation) are bf16,
on this CPU's AMX units where it has them; the statistics and the solves stay float32 either way.
Both outputs are judged on the same statistics: every pruned linear's error
||(W - W_hat) X||^2 / ||W X||^2 on the dense float32 model's inputs (X from the same calibration
set), W the float32 weights, so bf16's own rounding of the weights counts against it. Also
printed: the fraction of weights zero in one output and not in the other (pruned, or with
`quantize` rounded to zero). The
options after ``--`` go to both runs (default: ``--method sparsegpt --sparsity 0.5``); a
benchmark, never a test.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from stream_memory import measure, split_argv  # noqa: E402

from rac.prune.stats import relative_error  # noqa: E402

DTYPES = ("float32", "bfloat16")


def dense_stats(model: str, calib: str, threads: int) -> tuple[dict, dict]:
    """Every decoder linear's float32 weight and its input statistics on the dense float32 model."""
    from rac import calibset, models
    from rac.prune.batches import make_batches
    from rac.prune.forward import input_stats

    torch.set_num_threads(threads)
    lm = models.load_model(model, "cpu", torch.float32)
    tok = models.load_tokenizer(model)
    batches = make_batches(calibset.read(Path(calib)).rows, tok.pad_token_id, {}, 8192)
    linears = {n: m for n, m in models.decoder_blocks(lm).named_modules()
               if isinstance(m, torch.nn.Linear)}
    stats = input_stats(lm, linears, batches)
    return {n: m.weight.detach().clone() for n, m in linears.items()}, {n: s.H for n, s in stats.items()}


def outputs(out: Path, names: list[str]) -> dict[str, torch.Tensor]:
    """The decoder linears' weights of a pruned model directory, by their names in the blocks."""
    from rac import models

    lm = models.load_model(out, "cpu")
    blocks = models.decoder_blocks(lm)
    return {n: blocks.get_submodule(n).weight.detach() for n in names}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--calib", required=True)
    p.add_argument("--work", type=Path, help="an existing directory for the scratch copy of "
                   "both outputs, removed at the end (default: the system's temporary directory)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    a, verb, rest = split_argv(p, sys.argv[1:])
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        runs = {d: measure([verb, a.model, "--calib", a.calib, *rest, "--dtype", d, "--out",
                            str(Path(tmp) / d)], a.threads) for d in DTYPES}
        W, H = dense_stats(a.model, a.calib, a.threads)
        hats = {d: outputs(Path(tmp) / d, list(W)) for d in DTYPES}
    errs = {d: [relative_error(W[n], hats[d][n], H[n]) for n in W] for d in DTYPES}
    flips = sum(int(((hats["float32"][n] == 0) != (hats["bfloat16"][n] == 0)).sum()) for n in W) \
        / sum(w.numel() for w in W.values())
    print(f"\n{a.model}, rac {verb} {' '.join(rest)}, calibration {a.calib}, {a.threads} threads")
    print("| dtype | seconds | peak RSS MB | mean layer error (dense fp32 inputs) |")
    print("|---|---|---|---|")
    for d in DTYPES:
        print(f"| {d} | {runs[d].wall_s:.1f} | {runs[d].peak_mb:.0f} | "
              f"{sum(errs[d]) / len(errs[d]):.5f} |")
    ratios = [b / f for b, f in zip(errs["bfloat16"], errs["float32"]) if f > 0]
    geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
    print(f"bf16 / fp32: time {runs['bfloat16'].wall_s / runs['float32'].wall_s:.3f}x, peak RSS "
          f"{runs['bfloat16'].peak_mb / runs['float32'].peak_mb:.3f}x, layer error {geo:.3f}x "
          f"(geometric mean; range [{min(ratios):.3f}, {max(ratios):.3f}] over {len(ratios)} "
          f"linears); zero in one output only: {flips:.4f} of the weights")


if __name__ == "__main__":
    main()
