"""Trace generation throughput: rac's decode loop vs a one-prompt-at-a-time ``generate`` loop
(what the paper's code does) and vs batched ``generate``, on the embedded model, in one run.

    python bench/traces_throughput.py --problems 256 --batch-sizes 16 64 128 256 --threads 1

Prints generated tokens/s per batch size and the ratio to the one-at-a-time baseline.
"""

from __future__ import annotations

import argparse
import time

import torch

from rac import models
from rac.generate import Completion, Sampling, TransformersBackend, eos_ids_of, generate_all, trim
from rac.tasks import arith


class GenerateBackend:
    """``transformers``' own ``generate`` on a left-padded batch: the baseline."""

    name = "generate"

    def __init__(self, lm, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: Sampling, seed: int) -> list[Completion]:
        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        torch.manual_seed(seed)
        out = self.lm.generate(input_ids=ids, attention_mask=mask, do_sample=True,
                               temperature=sampling.temperature, top_p=sampling.top_p, top_k=None,
                               max_new_tokens=sampling.max_new_tokens, pad_token_id=self.pad_id,
                               eos_token_id=sorted(self.eos_ids))
        return [trim(r, self.eos_ids, sampling.max_new_tokens) for r in out[:, width:].tolist()]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--baseline-problems", type=int, default=32,
                    help="prompts for the slow one-at-a-time baseline")
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
    eos = eos_ids_of(tok, lm)
    ours, theirs = TransformersBackend(lm, tok.pad_token_id, eos), GenerateBackend(lm, tok.pad_token_id, eos)

    def rate(backend, batch_size: int, n: int) -> float:
        t0 = time.perf_counter()
        out = generate_all(backend, prompts[:n], sampling, 0, batch_size, progress=False)
        return sum(len(c.ids) for c in out) / (time.perf_counter() - t0)

    base = rate(theirs, 1, min(a.baseline_problems, a.problems))
    print(f"{a.problems} prompts, T={sampling.temperature}, top-p={sampling.top_p}, "
          f"{torch.get_num_threads()} threads")
    print("| batch size | generate tokens/s | x | rac tokens/s | x | rac / generate |")
    print("|---|---|---|---|---|---|")
    for bs in [1, *a.batch_sizes]:
        n = min(a.baseline_problems, a.problems) if bs == 1 else a.problems
        g = base if bs == 1 else rate(theirs, bs, n)
        r = rate(ours, bs, n)
        print(f"| {bs} | {g:.0f} | {g / base:.2f} | {r:.0f} | {r / base:.2f} | {r / g:.2f} |")


if __name__ == "__main__":
    main()
