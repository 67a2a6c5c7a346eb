"""Trace generation throughput: rac's batched backend vs a one-prompt-at-a-time ``generate`` loop
(what the paper's code does), on the embedded model, in one run.

    python bench/traces_throughput.py --problems 128 --batch-sizes 16 64 128

Prints generated tokens/s per batch size and the ratio to the one-at-a-time baseline.
"""

from __future__ import annotations

import argparse
import time

import torch

from rac import models
from rac.evaluate import generate_all
from rac.generate import Sampling, TransformersBackend, eos_ids_of
from rac.toy import arith


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = models.load_tokenizer(a.model)
    lm = models.load_model(a.model)
    d = models.defaults(a.model)
    sampling = Sampling(d.trace_temperature, d.trace_top_p, d.trace_max_new_tokens)
    prompts = [models.prompt_ids(tok, p.problem, d.instruction)
               for p in arith.generate(a.problems, 0, "calib")]
    backend = TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm))

    def rate(batch_size: int, n: int) -> float:
        t0 = time.perf_counter()
        out = generate_all(backend, prompts[:n], sampling, 0, batch_size, progress=False)
        return sum(len(c.ids) for c in out) / (time.perf_counter() - t0)

    base = rate(1, min(32, a.problems))  # the one-at-a-time loop, on a subset
    print(f"{a.problems} prompts, T={sampling.temperature}, top-p={sampling.top_p}, "
          f"{torch.get_num_threads()} threads")
    print("| batch size | generated tokens/s | x one-at-a-time |")
    print("|---|---|---|")
    print(f"| 1 (baseline) | {base:.0f} | 1.00 |")
    for bs in a.batch_sizes:
        r = rate(bs, a.problems)
        print(f"| {bs} | {r:.0f} | {r / base:.2f} |")


if __name__ == "__main__":
    main()
