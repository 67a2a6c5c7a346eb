"""Top-p in vLLM on a CPU: rac's processor (``rac.vllm_nucleus``: the most likely 256 tokens
ranked) against vLLM's own (a sort of the whole vocabulary for every row at every step), on one
engine, the same seeded requests, in one run (in the environment that has vLLM):

    .venv-vllm/bin/python bench/vllm_top_p.py models/qwen2.5-coder-0.5b-instruct/hf \
        --problems 128 --batch-size 128 --max-new-tokens 256

Prints each way's generated tokens/s, the ratio, and how many completions are the same token for
token (both keep the same set, and vLLM's sampler draws from it with the request's seed, so all
of them should be, but for a token at the edge of a set where float sums round differently).
The rows are sampled at the paper's T=0.6, top-p 0.95; the greedy rate is printed beside them.
A first greedy pass of two tokens fills vLLM's prefix cache, so the rates are of decoding.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import closing

from rac import models
from rac.evaluate import instructions_for
from rac.generate import Engine, open_backend, request_seed
from rac.tasks.generators import generate
from rac.tasks.problems import answer_form


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--task", default="gsm")
    ap.add_argument("--problems", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.95)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--out", help="write the numbers as JSON here too")
    a = ap.parse_args()

    from vllm import SamplingParams, TokensPrompt

    from rac.vllm_nucleus import KEY

    problems = generate(a.task, a.problems, 0, "test")
    tok = models.load_tokenizer(a.model)
    texts = instructions_for(a.model, problems)
    prompts = [TokensPrompt(prompt_token_ids=models.prompt_ids(
        tok, p.problem, texts[answer_form(p)], models.thinks(tok))) for p in problems]
    engine = Engine(backend="vllm", eager=True, max_model_len=2048, threads=a.threads,
                    dtype=a.dtype)
    with closing(open_backend(a.model, tok, engine)) as vllm:
        def run(way: str, max_tokens: int = a.max_new_tokens) -> tuple[list[list[int]], float]:
            params = [SamplingParams(
                temperature=0.0 if way == "greedy" else a.temperature,
                top_p=a.top_p if way == "vllm" else 1.0,
                extra_args={KEY: a.top_p} if way == "rac" else None,
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
    out = {"problems": len(problems), "batch_size": a.batch_size,
           "max_new_tokens": a.max_new_tokens, "temperature": a.temperature, "top_p": a.top_p,
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
