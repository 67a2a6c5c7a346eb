"""Peak host memory and wall time of `rac prune` (or `rac quantize`) streaming the decoder blocks
vs holding the whole model, each run in a fresh process, on one model directory and one
calibration set; and whether the two outputs hold the same tensors, bit for bit.

    python bench/stream_memory.py MODEL --calib DIR [--work DIR] [--threads N] [-- rac prune options...]
    python bench/stream_memory.py /models/DeepSeek-R1-Distill-Qwen-1.5B --calib calib-rac \\
        -- --method sparsegpt --sparsity 0.5 --device cuda

The options after ``--`` go to both runs (default: ``--method sparsegpt --sparsity 0.5``; give
``quantize --scheme W4A16`` as the first words to time `rac quantize` instead). Peak RSS is the
child's high-water mark at exit, the load, the pruning and the save included. Prints one line per
mode (its peak also against the size of the model's safetensors files) and the streaming /
in-memory ratios; a benchmark, never a test (tests/test_stream.py asserts the memory bound on a
model built for it through ``measure``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

# The child's peak is its own memory map's high-water mark (VmHWM), which exec resets:
# ru_maxrss is carried across exec, so a child forked from a large parent (pytest holding models)
# would report the parent's resident set as its own.
CHILD = """
import json, resource, sys, time
from rac.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
wall = time.perf_counter() - t0
try:
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"code": code, "wall_s": wall, "peak_mb": peak}))
"""


@dataclass(frozen=True)
class Run:
    peak_mb: float
    wall_s: float


def measure(argv: list[str], threads: int = 1) -> Run:
    """Peak RSS and wall time of ``rac ARGV`` in a fresh Python process (``threads`` threads)."""
    done = subprocess.run([sys.executable, "-c", CHILD, *argv, "--threads", str(threads)],
                          capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": str(threads),
                               "TOKENIZERS_PARALLELISM": "false"}, check=False)
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"code": None}
    if result["code"] != 0:
        raise RuntimeError(f"rac {' '.join(argv)} failed:\n{done.stderr[-2000:]}")
    return Run(result["peak_mb"], result["wall_s"])


def differing(a: Path, b: Path) -> list[str]:
    """The tensors two model directories do not share bit for bit (dtype included), and the
    names only one of them has."""
    from safetensors import safe_open

    from rac.checkpoint import Checkpoint

    maps = [Checkpoint(a).weight_map, Checkpoint(b).weight_map]
    diff = sorted(set(maps[0]) ^ set(maps[1]))
    for name in sorted(set(maps[0]) & set(maps[1])):
        with safe_open(str(a / maps[0][name]), "pt") as fa, \
                safe_open(str(b / maps[1][name]), "pt") as fb:
            x, y = fa.get_tensor(name), fb.get_tensor(name)
        if x.dtype != y.dtype or not bool((x == y).all()) or x.shape != y.shape:
            diff.append(name)
    return diff


def split_argv(p: argparse.ArgumentParser, argv: list[str]
               ) -> tuple[argparse.Namespace, str, list[str]]:
    """A bench's own options (before ``--``, parsed by ``p``), then the rac verb and its options
    after it (default: ``prune --method sparsegpt --sparsity 0.5``; ``quantize ...`` as given)."""
    cut = argv.index("--") if "--" in argv else len(argv)
    options = argv[cut + 1:] or ["--method", "sparsegpt", "--sparsity", "0.5"]
    verb, rest = (options[0], options[1:]) if options[:1] == ["quantize"] else ("prune", options)
    return p.parse_args(argv[:cut]), verb, rest


def compare(model: str, calib: str, verb: str, rest: list[str], work: Path, threads: int = 1
            ) -> tuple[Run, Run, list[str]]:
    """The in-memory run, the streamed run and the tensors that differ between their outputs."""
    runs = []
    for name, extra in (("memory", []), ("stream", ["--stream"])):
        runs.append(measure([verb, model, "--calib", calib, *rest, *extra, "--out",
                             str(work / name), "--overwrite"], threads))
    return runs[0], runs[1], differing(work / "memory", work / "stream")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--calib", required=True)
    p.add_argument("--work", type=Path, help="where both outputs go (default: a temporary dir)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of each run")
    a, verb, rest = split_argv(p, sys.argv[1:])
    with tempfile.TemporaryDirectory(dir=a.work) as tmp:
        memory, stream, diff = compare(a.model, a.calib, verb, rest, Path(tmp), a.threads)
    from rac import models

    weights = sum(f.stat().st_size for f in models.resolve(a.model).glob("*.safetensors")) / 2 ** 20
    for name, run in (("in memory", memory), ("streamed ", stream)):
        print(f"{name}: peak RSS {run.peak_mb:8.0f} MB ({run.peak_mb / weights:.3f} of the "
              f"{weights:.0f} MB of weights), {run.wall_s:7.1f} s")
    print(f"streamed / in memory: peak RSS {stream.peak_mb / memory.peak_mb:.3f}x, "
          f"wall time {stream.wall_s / memory.wall_s:.3f}x; outputs "
          + ("identical bit for bit" if not diff else f"DIFFER in {len(diff)} tensors: {diff[:5]}"))


if __name__ == "__main__":
    main()
