"""Calibration across processes: `rac prune` in one process against `torchrun` with N gloo ranks
on the same model and calibration set, in one run.

One process gets all the threads (--threads T); each of the N ranks gets T / N, so both use the
same cores. Prints the wall time of each, their ratio, and how far the two models are apart:
the fraction of weights whose pruned-or-kept decision differs (0 in float64; in float32 the
ranks sum H in another order, which can flip a weight whose score ties its row's threshold to
float32 rounding) and the largest weight difference.

    python bench/torchrun_ranks.py models/qwen2.5-coder-0.5b-instruct/hf --calib runs/c-generic \\
        --ranks 2 --threads 2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def prune(argv: list[str], ranks: int, threads: int, out: Path) -> float:
    """Seconds of one `rac prune` into ``out``, in one process or under torchrun."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT / "src")}
    launch = ([sys.executable, "-m", "rac.cli"] if ranks == 1 else
              [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(ranks), "-m", "rac.cli"])
    t0 = time.perf_counter()
    done = subprocess.run([*launch, "prune", *argv, "--threads", str(threads), "--out", str(out)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{ranks} rank(s) failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        out.update({k: v for k, v in load_file(str(f)).items() if ".layers." in k})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="in all, shared by the ranks")
    ap.add_argument("--sparsity", default="0.5")
    a = ap.parse_args()
    argv = [a.model, "--calib", a.calib, "--method", "sparsegpt", "--sparsity", a.sparsity]
    with tempfile.TemporaryDirectory() as tmp:
        one = prune(argv, 1, a.threads, Path(tmp) / "one")
        many = prune(argv, a.ranks, max(1, a.threads // a.ranks), Path(tmp) / "many")
        A, B = tensors(Path(tmp) / "one"), tensors(Path(tmp) / "many")
    flips = sum(int(((A[k] == 0) != (B[k] == 0)).sum()) for k in A)
    weights = sum(A[k].numel() for k in A)
    largest = max(float((A[k].double() - B[k].double()).abs().max()) for k in A)
    print(f"{a.model}: SparseGPT {a.sparsity}, {a.threads} threads in all")
    print("| run | seconds |\n|---|---|")
    print(f"| 1 process, {a.threads} threads | {one:.1f} |")
    print(f"| torchrun, {a.ranks} gloo ranks x {max(1, a.threads // a.ranks)} threads | {many:.1f} |")
    print(f"| ratio (torchrun / 1 process) | {many / one:.2f} |")
    print(f"\nmask decisions that differ: {flips} of {weights} ({flips / weights:.2e}); "
          f"largest weight difference {largest:.2e}")


if __name__ == "__main__":
    main()
