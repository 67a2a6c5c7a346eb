"""Top-p in vLLM on a CPU: rac's processor (``rac.vllm_nucleus``: the most likely 256 tokens
ranked) against vLLM's own (a sort of the whole vocabulary for every row at every step), on one
engine, the same seeded requests, in one run (in the environment that has vLLM):

    .venv-vllm/bin/python bench/vllm_top_p.py models/qwen2.5-coder-0.5b-instruct/hf \
        --problems 128 --batch-size 128 --max-new-tokens 256

Prints each way's generated tokens/s, the ratio, and how many completions are the same token for
token (both keep the same set, and vLLM's sampler draws from it with the request's seed, so all
of them should be, but for a token at the edge of a set where float sums round differently).
The rows are sampled at the paper's T=0.6, top-p 0.95 (``--top-k 20``: with the top-k that
Qwen2.5's released checkpoints ship, which vLLM applies in the same sort); the greedy rate is
printed beside them.
A first greedy pass of two tokens fills vLLM's prefix cache, so the rates are of decoding.
Before the engine starts, the two top-p operations alone on a batch of the model's own
next-token logits (16 prompts' rows, tiled), on one thread as vLLM's serving process runs them
(``--ops-only``: just that).
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import closing

import torch

from rac import models
from rac.evaluate import instructions_for
from rac.generate import Engine, open_backend, request_seed
from rac.tasks.generators import generate
from rac.tasks.problems import answer_form


def next_token_logits(model: str, prompts: list[list[int]], temperature: float) -> torch.Tensor:
    """The model's tempered next-token logits after each prompt (transformers, fp32): real rows,
    whose top-p sets are as narrow as decoding meets (random logits are flat, every set wide)."""
    lm = models.load_model(model)
    with torch.no_grad():
        return torch.cat([lm(torch.tensor([ids])).logits[:, -1].float() for ids in prompts]) / temperature


def op_seconds(logits: torch.Tensor, rows: int, top_p: float, top_k: int) -> dict[str, float]:
    """Seconds of vLLM's top-k / top-p (a sort of every row) and rac's on ``rows`` rows tiled from
    ``logits``, on one thread as vLLM's serving process runs them."""
    from vllm.v1.sample.ops.topk_topp_sampler import apply_top_k_top_p_pytorch

    from rac.vllm_nucleus import nucleus_logits

    torch.set_num_threads(1)
    logits = logits.repeat(-(-rows // len(logits)), 1)[:rows]
    p, k = torch.full((rows,), top_p), torch.full((rows,), top_k)
    out = {}
    for way, op in (("vllm", lambda x: apply_top_k_top_p_pytorch(x, k if top_k else None, p)),
                    ("rac", lambda x: nucleus_logits(x, p, k))):
        x = logits.clone()
        t0 = time.perf_counter()
        op(x)
        out[way] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--task", default="gsm")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--top-k", type=int, default=0, help="0: none")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", help="write the numbers as JSON here too")
    ap.add_argument("--ops-only", action="store_true", help="time the two top-p operations alone")
    a = ap.parse_args()
    tok = models.load_tokenizer(a.model)
    problems = generate(a.task, a.problems, 0, "test")
    texts = instructions_for(a.model, problems)
    thinking = models.thinking_for(a.model, tok, None)  # as rac eval asks
    ids = [models.prompt_ids(tok, p.problem, texts[answer_form(p)], thinking) for p in problems]
    ops = op_seconds(next_token_logits(a.model, ids[:16], a.temperature), a.batch_size, a.top_p,
                     a.top_k)
    what = f"top-k {a.top_k} / top-p" if a.top_k else "top-p"
    print(f"{what} on {a.batch_size} rows of next-token logits, one thread: vLLM's sort "
          f"{ops['vllm']:.3f} s, rac's {ops['rac']:.3f} s ({ops['vllm'] / ops['rac']:.1f}x)")
    if a.ops_only:
        return

    from vllm import SamplingParams, TokensPrompt

    from rac.vllm_nucleus import KEY, TOP_K

    prompts = [TokensPrompt(prompt_token_ids=x) for x in ids]
    engine = Engine(backend="vllm", eager=True, max_model_len=2048, threads=a.threads,
                    dtype=a.dtype)
    with closing(open_backend(a.model, tok, engine)) as vllm:
        def run(way: str, max_tokens: int = a.max_new_tokens) -> tuple[list[list[int]], float]:
            params = [SamplingParams(
                temperature=0.0 if way == "greedy" else a.temperature,
                top_p=a.top_p if way == "vllm" else 1.0,
                top_k=a.top_k if way == "vllm" and a.top_k else -1,
                extra_args={KEY: a.top_p, TOP_K: a.top_k} if way == "rac" else None,
                seed=request_seed(0, p.id, 0), max_tokens=max_tokens,
                stop_token_ids=vllm.eos_ids, detokenize=False) for p in problems]
            ids, seconds = [], 0.0
            for s in range(0, len(prompts), a.batch_size):
                t0 = time.perf_counter()
                outs = vllm.llm.generate(prompts[s:s + a.batch_size], params[s:s + a.batch_size],
                                         use_tqdm=False)
                seconds += time.perf_counter() - t0
                ids += [list(o.outputs[0].token_ids) for o in outs]
            return ids, sum(map(len, ids)) / seconds

        # warm-up: the prompts' prefill, which vLLM's prefix cache then keeps for every run, and
        # a first decoding step
        run("greedy", max_tokens=2)
        results = {way: run(way) for way in ("vllm", "rac", "greedy")}
    rate = {way: r[1] for way, r in results.items()}
    same = sum(x == y for x, y in zip(results["vllm"][0], results["rac"][0]))
    out = {"op_seconds": {k: round(v, 3) for k, v in ops.items()}, "problems": len(problems),
           "batch_size": a.batch_size, "max_new_tokens": a.max_new_tokens,
           "temperature": a.temperature, "top_p": a.top_p, "top_k": a.top_k,
           "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
           "rac_over_vllm": round(rate["rac"] / rate["vllm"], 3),
           "same_completions": same}
    print(f"top-p by vLLM's sort {rate['vllm']:.1f} tokens/s, by rac's processor {rate['rac']:.1f} "
          f"({out['rac_over_vllm']:.2f}x); greedy {rate['greedy']:.1f}; "
          f"{same}/{len(problems)} completions the same token for token")
    if a.out:
        from rac.io import write_json

        write_json(a.out, out)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
