"""Generation throughput: rac's decode loop vs a one-prompt-at-a-time ``generate`` loop (what
the paper's code does) and vs batched ``generate``, in one run, and against the rate of the
model's own matrix products at each batch size, measured in the same run.

    python bench/traces_throughput.py --problems 256 --batch-sizes 16 64 128 256 --threads 1
    python bench/traces_throughput.py --model models/qwen2.5-coder-0.5b-instruct/hf --task gsm \
        --batches 1 --batch-sizes 16 64 128 256 --generate-max-batch 128 --max-new-tokens 128

Prints generated tokens/s per batch size, the ratio to the one-at-a-time baseline and to
``generate``, and the "product limit": the tokens/s of a decode step that did nothing but the
model's linear layers (every decoder linear and the output layer, weights read from memory as in
a real step) at that many rows. Prefill, attention, norms and sampling come on top of it, so
rac's fraction of the limit says how much of a step is spent outside the products.
"""

from __future__ import annotations

import argparse
import time

import torch

from rac import models
from rac.batched import generate_all
from rac.generate import Completion, Sampling, TransformersBackend, eos_ids_of, trim
from rac.tasks import arith, gsm


class GenerateBackend:
    """``transformers``' own ``generate`` on a left-padded batch: the baseline."""

    name = "generate"

    def __init__(self, lm, pad_id: int, eos_ids: set[int]):
        self.lm, self.pad_id, self.eos_ids = lm, pad_id, eos_ids

    @torch.inference_mode()
    def generate(self, prompts: list[list[int]], sampling: Sampling,
                 seeds: list[int]) -> list[Completion]:
        width = max(map(len, prompts))
        ids = torch.tensor([[self.pad_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        torch.manual_seed(seeds[0])  # generate takes one seed for its whole batch
        sample = ({"do_sample": True, "temperature": sampling.temperature, "top_p": sampling.top_p}
                  if sampling.temperature > 0 else {"do_sample": False})
        out = self.lm.generate(input_ids=ids, attention_mask=mask, top_k=None, **sample,
                               max_new_tokens=sampling.max_new_tokens, pad_token_id=self.pad_id,
                               eos_token_id=sorted(self.eos_ids))
        return [trim(r, self.eos_ids, sampling.max_new_tokens) for r in out[:, width:].tolist()]


@torch.inference_mode()
def product_limit(lm: torch.nn.Module, rows: int, reps: int = 3) -> tuple[float, float]:
    """(tokens/s, GFLOP/s) of one decode step's linear products at ``rows`` rows: every
    ``nn.Linear`` of the model (decoder and output layer) applied in turn to ``rows`` random
    inputs, best of ``reps`` passes. The model is far larger than any cache, so each pass
    streams the weights from memory as generation does."""
    linears = [m for m in lm.modules() if isinstance(m, torch.nn.Linear)]
    inputs = {m.in_features: torch.randn(rows, m.in_features) for m in linears}
    flops = sum(2 * rows * m.in_features * m.out_features for m in linears)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for m in linears:
            m(inputs[m.in_features])
        best = min(best, time.perf_counter() - t0)
    return rows / best, flops / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 64, 128])
    ap.add_argument("--baseline-problems", type=int, default=32,
                    help="prompts for the slow one-at-a-time baseline")
    ap.add_argument("--batches", type=int, default=0,
                    help="run this many batches at each batch size (default: --problems prompts)")
    ap.add_argument("--generate-max-batch", type=int, default=1 << 30,
                    help="skip `generate` above this batch size (it is slow on a real model)")
    ap.add_argument("--task", choices=("arith", "gsm"), default="arith")
    ap.add_argument("--max-new-tokens", type=int, default=0, help="default: the model's")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = models.load_tokenizer(a.model)
    lm = models.load_model(a.model)
    d = models.defaults(a.model)
    sampling = Sampling(d.trace_temperature, d.trace_top_p,
                        a.max_new_tokens or d.trace_max_new_tokens)
    n_max = max(a.problems, a.batches * max(a.batch_sizes), a.baseline_problems)
    thinking = models.thinking_for(a.model, tok, None)
    task = {"arith": arith, "gsm": gsm}[a.task]
    prompts = [models.prompt_ids(tok, p.problem, models.instruction_for(d, "math", None), thinking)
               for p in task.generate(n_max, 0, "calib")]
    eos = eos_ids_of(tok, lm.generation_config)
    ours, theirs = TransformersBackend(lm, tok.pad_token_id, eos), GenerateBackend(lm, tok.pad_token_id, eos)

    def rate(backend, batch_size: int, n: int) -> float:
        t0 = time.perf_counter()
        out = generate_all(backend, prompts[:n], sampling, list(range(n)), batch_size, progress=False)
        return sum(len(c.ids) for c in out) / (time.perf_counter() - t0)

    base = rate(theirs, 1, a.baseline_problems)
    print(f"{a.model}, {a.task} prompts (mean {sum(map(len, prompts)) / len(prompts):.0f} tokens), "
          f"T={sampling.temperature}, top-p={sampling.top_p}, max {sampling.max_new_tokens} new "
          f"tokens, {torch.get_num_threads()} threads")
    print("| batch size | prompts | generate tokens/s | x | rac tokens/s | x | rac / generate "
          "| product limit tokens/s (GFLOP/s) | rac / limit |")
    print("|---|---|---|---|---|---|---|---|---|")
    for bs in [1, *a.batch_sizes]:
        n = a.baseline_problems if bs == 1 else (a.batches * bs or a.problems)
        g = base if bs == 1 else rate(theirs, bs, n) if bs <= a.generate_max_batch else None
        r = rate(ours, bs, n)
        lim, gflops = product_limit(lm, bs)
        gen = "- | -" if g is None else f"{g:.1f} | {g / base:.2f}"
        ratio = "-" if g is None else f"{r / g:.2f}"
        print(f"| {bs} | {n} | {gen} | {r:.1f} | {r / base:.2f} | {ratio} | {lim:.0f} "
              f"({gflops:.0f}) | {r / lim:.2f} |", flush=True)


if __name__ == "__main__":
    main()
