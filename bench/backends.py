"""Generation backends head to head: vLLM vs rac's own decode loop vs ``transformers``' batched
``generate``, in one run on the same prompts (run it in the environment that has vLLM,
``make vllm-env``):

    .venv-vllm/bin/python bench/backends.py models/qwen2.5-coder-0.5b-instruct/hf \
        --problems 200 --batch-sizes 1 16 64 256 --max-new-tokens 400

Two measurements per backend: generated tokens/s on one batch of each size (greedy, GSM-style
test prompts), and the wall time of a whole ``rac eval`` of ``--problems`` problems at batch 64,
start-up included (loading the model; for vLLM, starting its engine and compiling), on one
engine per backend. Ratios are
against rac's loop. vLLM runs in its default dtype here (bf16 for an fp32 checkpoint on a CPU),
rac's loop and ``generate`` in the checkpoint's (fp32): the accuracy column says what that costs.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import closing
from pathlib import Path

from traces_throughput import GenerateBackend

from rac import models
from rac.batched import generate_all
from rac.evaluate import EvalConfig, evaluate, instructions_for
from rac.generate import Engine, eos_ids_of, open_backend
from rac.sampling import Sampling
from rac.tasks.generators import generate
from rac.tasks.problems import Problem


def batch_rates(backend, prompts: list[list[int]], sampling: Sampling, sizes: list[int],
                cap: int | None = None) -> dict[int, float]:
    rates = {}
    for bs in sizes:
        if cap is not None and bs > cap:
            continue
        batch = (prompts * (bs // len(prompts) + 1))[:bs]
        t0 = time.perf_counter()
        out = generate_all(backend, batch, sampling, list(range(bs)), bs, progress=False)
        rates[bs] = sum(len(c.ids) for c in out) / (time.perf_counter() - t0)
    return rates


def whole_eval(backend, tok, problems: list[Problem], model: str, max_new: int) -> dict:
    """What ``rac eval`` does once its backend is up: generate at batch 64 and grade."""
    r = evaluate(backend, tok, problems, EvalConfig(Sampling(0.0, 1.0, max_new), batch_size=64),
                 progress=False, instructions=instructions_for(model, problems))
    s = r["summary"]
    return {"wall_s": s["wall_s"], "generation_s": s["generation_s"],
            "tokens_per_s": s["tokens_per_s"], "accuracy": s["accuracy"], "se": s["accuracy_se"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--problems", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=400)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64, 256])
    ap.add_argument("--generate-max-batch", type=int, default=64, help="generate's largest batch")
    ap.add_argument("--out", type=Path, help="also write the results here (JSON)")
    ap.add_argument("--only-rac", action="store_true", help="rac's loop alone: run in .venv, it "
                    "says what the vLLM environment's libraries cost the loop")
    ap.add_argument("--eager", action="store_true", help="vLLM without graph compilation")
    ap.add_argument("--no-eval", action="store_true", help="batch rates only, without the whole "
                    "evaluation (to add batch sizes to a run that measured it)")
    a = ap.parse_args()
    tok = models.load_tokenizer(a.model)
    test = generate("gsm", a.problems, 0, "test")
    text = models.instructions(models.defaults(a.model), test, None)["math"]
    thinking = models.thinking_for(a.model, tok, None)
    prompts = [models.prompt_ids(tok, p.problem, text, thinking) for p in test]
    sampling = Sampling(0.0, 1.0, a.max_new_tokens)
    res: dict = {"model": a.model, "problems": a.problems, "max_new_tokens": a.max_new_tokens}
    vllm = [] if a.only_rac else [("vllm", Engine(backend="vllm", eager=a.eager))]
    engines = [("rac", Engine())] + vllm
    for name, engine in engines:
        t0 = time.perf_counter()
        with closing(open_backend(a.model, tok, engine)) as backend:
            res[name] = {"startup_s": time.perf_counter() - t0}
            if not a.no_eval:
                res[name]["eval"] = whole_eval(backend, tok, test, a.model, a.max_new_tokens)
                res[name]["eval"]["wall_s"] += res[name]["startup_s"]
            res[name]["rates"] = batch_rates(backend, prompts, sampling, a.batch_sizes)
        print(name, json.dumps(res[name]), flush=True)  # a crash later keeps what was measured
    if a.only_rac:
        return
    lm = models.load_model(a.model)
    gen = GenerateBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm.generation_config))
    res["generate"] = {"rates": batch_rates(gen, prompts, sampling, a.batch_sizes,
                                            a.generate_max_batch)}
    print(f"{a.model}: greedy, {a.max_new_tokens} new tokens, GSM-style test prompts")
    print("| batch | rac loop tokens/s | vLLM tokens/s | vLLM / rac | generate tokens/s | generate / rac |")
    print("|---|---|---|---|---|---|")
    for bs in a.batch_sizes:
        r, v, g = (res[k]["rates"].get(bs) for k in ("rac", "vllm", "generate"))
        gen_cells = f"{g:.1f} | {g / r:.2f}" if g else "- | -"
        print(f"| {bs} | {r:.1f} | {v:.1f} | {v / r:.2f} | {gen_cells} |")
    if a.out:
        a.out.write_text(json.dumps(res, indent=1))
    if a.no_eval:
        return
    print(f"\n| whole rac eval, {a.problems} problems, batch 64 | wall s | generation s | "
          "tokens/s | accuracy | engine start s |")
    print("|---|---|---|---|---|---|")
    for k in ("rac", "vllm"):
        e = res[k]["eval"]
        print(f"| {k} | {e['wall_s']:.0f} | {e['generation_s']:.0f} | {e['tokens_per_s']:.1f} | "
              f"{e['accuracy']:.3f} +- {e['se']:.3f} | {res[k]['startup_s']:.0f} |")
    print(f"\nvLLM / rac eval wall time: {res['vllm']['eval']['wall_s'] / res['rac']['eval']['wall_s']:.2f}")


if __name__ == "__main__":
    main()
