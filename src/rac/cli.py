"""The ``rac`` command line: parse arguments, call the library, print one-line errors.

This is the only module that knows about arguments and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rac.io import RacError

EXIT_USER_ERROR = 2


def _threads(n: int) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


# -- rac problems ---------------------------------------------------------------------------------

def cmd_problems(a: argparse.Namespace) -> None:
    from rac.tasks.problems import Problem, write_problems
    from rac.toy import arith

    if a.task != "arith":
        raise RacError(f"unknown task {a.task!r}; the built-in task is 'arith'")
    if a.n < 1:
        raise RacError(f"--n must be >= 1, got {a.n}")
    families = tuple(a.families.split(",")) if a.families else arith.FAMILIES
    made = arith.generate(a.n, a.seed, a.split, families)
    write_problems(a.out, [Problem(p.id, p.problem, p.answer,
                                   {"solution": p.solution, "family": p.family, "split": a.split})
                           for p in made])
    print(f"wrote {len(made)} {a.split} problems ({', '.join(families)}) to {a.out}")


# -- rac eval -------------------------------------------------------------------------------------

def _sampling(a: argparse.Namespace, temperature: float, top_p: float, max_new: int):
    from rac.generate import Sampling

    return Sampling(temperature=temperature if a.temperature is None else a.temperature,
                    top_p=top_p if a.top_p is None else a.top_p,
                    max_new_tokens=max_new if a.max_new_tokens is None else a.max_new_tokens)


def cmd_eval(a: argparse.Namespace) -> None:
    from rac import models
    from rac.evaluate import EvalConfig, evaluate, summary_markdown
    from rac.generate import TransformersBackend, eos_ids_of
    from rac.io import atomic_dir, atomic_write_text, check_output_dir, write_json
    from rac.tasks.problems import read_problems

    _threads(a.threads)
    problems = read_problems(a.problems)[: a.limit or None]
    check_output_dir(a.out, a.overwrite)
    d = models.defaults(a.model)
    sampling = _sampling(a, d.eval_temperature, d.eval_top_p, d.eval_max_new_tokens)
    cfg = EvalConfig(sampling=sampling, samples=a.samples, seed=a.seed, batch_size=a.batch_size,
                     instruction=d.instruction if a.instruction is None else a.instruction)
    tok = models.load_tokenizer(a.model, a.trust_remote_code)
    lm = models.load_model(a.model, models.pick_device(a.device),
                           trust_remote_code=a.trust_remote_code)
    backend = TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm))
    result = evaluate(backend, tok, problems, cfg)
    result["model"] = models.model_name(a.model)
    result["problems_file"] = str(a.problems)
    md = summary_markdown(result, f"rac eval: {result['model']}")
    with atomic_dir(a.out, overwrite=a.overwrite) as tmp:
        write_json(tmp / "eval.json", result)
        atomic_write_text(tmp / "eval.md", md)
    print(md)
    print(f"results: {Path(a.out) / 'eval.json'}, {Path(a.out) / 'eval.md'}")


# -- rac traces -----------------------------------------------------------------------------------

def cmd_traces(a: argparse.Namespace) -> None:
    from rac import models
    from rac.calibrate.traces import (
        TraceConfig,
        file_sha256,
        generate_traces,
        tokenizer_fingerprint,
        weights_fingerprint,
    )
    from rac.generate import TransformersBackend, VLLMBackend, eos_ids_of
    from rac.tasks.problems import read_problems

    _threads(a.threads)
    problems = read_problems(a.problems)
    for flag in ("budget_tokens", "samples_per_prompt", "batch_size"):
        if getattr(a, flag) < 1:
            raise RacError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(a, flag)}")
    d = models.defaults(a.model)
    tok = models.load_tokenizer(a.model, a.trust_remote_code)
    path = models.resolve(a.model)
    cfg = TraceConfig(
        model=models.model_name(a.model), weights_fingerprint=weights_fingerprint(path),
        tokenizer_fingerprint=tokenizer_fingerprint(tok), problems_sha256=file_sha256(a.problems),
        sampling=_sampling(a, d.trace_temperature, d.trace_top_p, d.trace_max_new_tokens),
        instruction=d.instruction if a.instruction is None else a.instruction, seed=a.seed,
        samples_per_prompt=a.samples_per_prompt, budget_tokens=a.budget_tokens,
        batch_size=a.batch_size, only_correct=a.only_correct, backend=a.backend)
    if a.backend == "vllm":
        backend = VLLMBackend(str(path), a.tensor_parallel, a.trust_remote_code)
    else:
        lm = models.load_model(a.model, models.pick_device(a.device),
                               trust_remote_code=a.trust_remote_code)
        backend = TransformersBackend(lm, tok.pad_token_id, eos_ids_of(tok, lm))
    done = generate_traces(backend, tok, problems, cfg, a.out, a.overwrite)
    note = "" if done["budget_reached"] else " (budget not reached: the problems ran out)"
    kept = f", kept {done['kept']} correct" if a.only_correct else ""
    print(f"{done['traces']} traces{kept}, {done['tokens']} tokens of {a.budget_tokens}{note}; "
          f"store: {a.out}")


# -- rac calib ------------------------------------------------------------------------------------

def _generic_documents(a: argparse.Namespace) -> list[str]:
    from rac.toy import generic

    if not a.text:
        if a.tokenizer != "embedded":
            raise RacError("--source generic needs --text FILE... (text, JSONL with 'text', or a "
                           "datasets directory); only the embedded model has a built-in corpus")
        return generic.corpus(20000, a.seed)
    docs: list[str] = []
    for f in a.text:
        f = Path(f)
        if f.is_dir():
            import datasets

            try:
                docs += list(datasets.load_from_disk(str(f))["text"])
            except (FileNotFoundError, KeyError) as e:
                raise RacError(f"{f}: not a datasets directory with a 'text' column") from e
        elif not f.exists():
            raise RacError(f"text file {f} does not exist")
        elif f.suffix == ".jsonl":
            for n, line in enumerate(f.read_text().splitlines(), 1):
                if line.strip():
                    try:
                        docs.append(json.loads(line)["text"])
                    except (json.JSONDecodeError, KeyError, TypeError) as e:
                        raise RacError(f"{f}:{n}: expected a JSON object with 'text'") from e
        else:
            docs += [d.strip() for d in f.read_text().split("\n\n") if d.strip()]
    if not docs:
        raise RacError("the --text inputs hold no documents")
    return docs


def cmd_calib(a: argparse.Namespace) -> None:
    from rac import models
    from rac.calibrate import calib
    from rac.calibrate.traces import load_traces, tokenizer_fingerprint, weights_fingerprint
    from rac.tasks.problems import read_problems

    if a.inspect:
        tok = models.load_tokenizer(a.tokenizer) if a.tokenizer else None
        print(calib.inspect(a.inspect, tok))
        return
    for flag in ("source", "tokenizer", "budget_tokens", "out"):
        if getattr(a, flag) is None:
            raise RacError(f"--{flag.replace('_', '-')} is required (or use --inspect DIR)")
    tok = models.load_tokenizer(a.tokenizer, a.trust_remote_code)
    instruction = models.defaults(a.tokenizer).instruction if a.instruction is None else a.instruction
    inputs: dict = {}

    def need(flag: str):
        value = getattr(a, flag)
        if not value:
            raise RacError(f"--source {a.source} needs --{flag}")
        inputs[flag] = str(value)
        return value

    if a.source == "generic":
        seqs = calib.from_documents(tok, _generic_documents(a))
        inputs["text"] = [str(t) for t in a.text] if a.text else "built-in corpus"
    elif a.source in ("prompt", "reference"):
        problems = read_problems(need("problems"))
        make = calib.from_prompts if a.source == "prompt" else calib.from_reference
        seqs = make(tok, problems, instruction)
    else:
        meta, traces = load_traces(need("traces"))
        same_tok = meta["tokenizer_fingerprint"] == tokenizer_fingerprint(tok)
        if a.source == "rac":
            if not same_tok:
                raise RacError(f"{a.traces} was made with another tokenizer than {a.tokenizer}; "
                               "use --source offpolicy")
            own = weights_fingerprint(models.resolve(a.tokenizer))
            if meta["weights_fingerprint"] != own:
                raise RacError(f"{a.traces} was generated by another model ({meta['model']}), so "
                               "it is not on-policy for this one; use --source offpolicy")
            seqs = calib.from_traces(traces)
        elif same_tok:
            seqs = calib.from_traces(traces)
        else:
            source_tok = models.load_tokenizer(Path(a.traces) / "tokenizer")
            seqs = calib.from_foreign_traces(traces, source_tok, tok, instruction)
    ds, info = calib.build(seqs, a.budget_tokens, tok.pad_token_id, a.pack, a.allow_short)
    info = {"source": a.source, "tokenizer": models.model_name(a.tokenizer),
            "tokenizer_fingerprint": tokenizer_fingerprint(tok), "inputs": inputs, **info}
    wrote = calib.save(ds, info, a.out, a.overwrite)
    seg = ", ".join(f"{k} {v}" for k, v in info["segment_tokens"].items() if v)
    print(f"{'wrote' if wrote else 'already built:'} {a.source} calibration set, {info['tokens']} "
          f"tokens in {info['rows']} rows ({seg}) at {a.out}")


# -- rac prune ------------------------------------------------------------------------------------

def _segment_weights(specs: list[str] | None) -> dict[int, float]:
    from rac.calibrate.calib import SEGMENT_NAMES

    ids = {name: k for k, name in SEGMENT_NAMES.items() if k >= 0}
    out: dict[int, float] = {}
    for spec in specs or []:
        name, _, value = spec.partition("=")
        if name not in ids:
            raise RacError(f"--segment-weights {spec!r}: segment must be one of {', '.join(ids)}")
        try:
            out[ids[name]] = float(value)
        except ValueError as e:
            raise RacError(f"--segment-weights {spec!r}: write SEGMENT=WEIGHT, e.g. decode=2") from e
        if not out[ids[name]] >= 0:
            raise RacError(f"--segment-weights {spec!r}: weights must be >= 0")
    return out


def cmd_prune(a: argparse.Namespace) -> None:
    import resource
    import time

    from rac import models
    from rac.calibrate import calib
    from rac.calibrate.traces import tokenizer_fingerprint
    from rac.io import atomic_dir, check_output_dir, write_json
    from rac.prune.engine import PruneConfig, Scope, make_batches, prune_model
    from rac.prune.masks import Target
    from rac.prune.quant import fp8_per_channel
    from rac.prune.sparsegpt import SparseGPTConfig

    _threads(a.threads)
    cfg = PruneConfig(
        method=a.method, target=Target.parse(a.sparsity, a.pattern), scope=Scope.parse(a.scope),
        true_sequential=a.true_sequential,
        sparsegpt=SparseGPTConfig(blocksize=a.blocksize, percdamp=a.percdamp),
        segment_weights=_segment_weights(a.segment_weights), device=models.pick_device(a.device))
    if a.blocksize < 1 or a.percdamp <= 0:
        raise RacError("--blocksize must be >= 1 and --percdamp > 0")
    check_output_dir(a.out, a.overwrite)
    t0 = time.perf_counter()
    tok = models.load_tokenizer(a.model, a.trust_remote_code)
    batches, calib_info = None, None
    if a.calib:
        ds, calib_info = calib.load(a.calib)
        if calib_info["tokenizer_fingerprint"] != tokenizer_fingerprint(tok):
            raise RacError(f"{a.calib} was tokenized for another model ({calib_info['tokenizer']}); "
                           "rebuild it with --tokenizer pointing at this model")
        rows = list(zip(ds["input_ids"], ds["attention_mask"], ds["segment"]))
        batches = make_batches(rows, tok.pad_token_id, cfg.segment_weights, a.batch_tokens)
    elif a.method != "magnitude":
        raise RacError(f"--method {a.method} needs --calib DIR (only magnitude works without)")
    lm = models.load_model(a.model, "cpu", trust_remote_code=a.trust_remote_code)
    report = prune_model(lm, models.decoder_blocks(lm), batches, cfg)
    if a.fp8:
        blocks = models.decoder_blocks(lm)
        for row in report:
            lin = blocks[row["layer"]].get_submodule(row["name"])
            lin.weight.data.copy_(fp8_per_channel(lin.weight.data)[0])
    models.check_finite(lm, "the pruned model")
    seconds = time.perf_counter() - t0
    pruned = sum(r["shape"][0] * r["shape"][1] for r in report)
    zeros = sum(r["sparsity"] * r["shape"][0] * r["shape"][1] for r in report)
    errors = [r["relative_error"] for r in report if r["relative_error"] is not None]
    totals = {
        "linears": len(report), "weights_in_scope": pruned, "sparsity_in_scope": zeros / pruned,
        "mean_relative_error": sum(errors) / len(errors) if errors else None,
        "max_percdamp": max((r["percdamp"] or 0) for r in report),
        "wall_s": round(seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    result = {"model": models.model_name(a.model), "calib": str(a.calib) if a.calib else None,
              "calib_info": calib_info, "method": cfg.method, "target": str(cfg.target),
              "scope": str(cfg.scope), "true_sequential": cfg.true_sequential, "fp8": a.fp8,
              "blocksize": a.blocksize, "percdamp": a.percdamp,
              "segment_weights": {str(k): v for k, v in cfg.segment_weights.items()},
              "device": cfg.device, "totals": totals, "layers": report}
    rac_file = models.resolve(a.model) / models.RAC_MODEL_FILE
    with atomic_dir(a.out, overwrite=a.overwrite) as tmp:
        lm.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if rac_file.exists():
            (tmp / models.RAC_MODEL_FILE).write_text(rac_file.read_text())
        write_json(tmp / "prune_report.json", result)
    err = totals["mean_relative_error"]
    print(f"pruned {len(report)} linears with {cfg.method} to {cfg.target} "
          f"({totals['sparsity_in_scope']:.4f} of weights in scope are zero)"
          + (f", mean relative error {err:.4f}" if err is not None else "")
          + f", {seconds:.1f} s, peak RSS {totals['peak_rss_mb']:.0f} MB -> {a.out}")


# -- rac toy train --------------------------------------------------------------------------------

def cmd_toy_train(a: argparse.Namespace) -> None:
    from dataclasses import replace

    from rac.toy.train import TrainConfig, train

    cfg = TrainConfig()
    overrides = {k: getattr(a, k) for k in ("steps", "seed", "threads") if getattr(a, k) is not None}
    cfg = replace(cfg, **overrides)
    from rac.io import check_output_dir

    check_output_dir(a.out, a.overwrite)
    work = Path(a.work_dir) if a.work_dir else Path(a.out).with_name(Path(a.out).name + ".work")
    print("config:", json.dumps(cfg.__dict__))
    info = train(cfg, Path(a.out), work, overwrite=a.overwrite)
    print(f"trained {info['parameters']} parameters in {info['train_seconds']:.0f} s "
          f"with {info['threads']} thread(s); saved to {a.out}")


# -- argument parsing -----------------------------------------------------------------------------

def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hugging Face model directory, or 'embedded'")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow code shipped in the model directory to run (off: never runs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the model's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, help="token limit per completion")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--instruction", help="text appended to each problem (default: the R1 "
                   "instruction for real models, none for the embedded model)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rac", description="Reasoning-aware compression.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("problems", help="write synthetic reasoning problems (JSONL)")
    p.add_argument("--task", default="arith", help="built-in task (default: arith)")
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=["train", "calib", "test"],
                   help="disjoint by construction (a problem's split is a hash of its text)")
    p.add_argument("--families", help="comma-separated subset of add,mul,word")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_problems)

    p = sub.add_parser("eval", help="evaluate a model on a problem file")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="JSONL problem file")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (pass@1 over k)")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("traces", help="generate the dense model's own chains of thought")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="calibration problems (JSONL)")
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--budget-tokens", type=int, default=1_000_000,
                   help="stop once kept traces hold this many prompt + generated tokens")
    p.add_argument("--only-correct", action="store_true", help="keep only correct traces")
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--tensor-parallel", type=int, default=1, help="vLLM tensor parallel size")
    p.add_argument("--out", type=Path, required=True, help="trace store directory (resumable)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("calib", help="build a calibration set (generic/prompt/rac/offpolicy)")
    p.add_argument("--source", choices=["generic", "prompt", "rac", "offpolicy", "reference"])
    p.add_argument("--tokenizer", help="the target model directory, or 'embedded'")
    p.add_argument("--budget-tokens", type=int, help="exact token budget of the set")
    p.add_argument("--text", nargs="+", help="generic: .txt (blank-line separated), .jsonl "
                   "with 'text', or a datasets directory")
    p.add_argument("--problems", type=Path, help="prompt/reference: calibration problems")
    p.add_argument("--traces", type=Path, help="rac/offpolicy: a trace store")
    p.add_argument("--pack", type=int, default=0, help="pack into windows of LEN (0: natural)")
    p.add_argument("--allow-short", action="store_true", help="accept fewer tokens than budgeted")
    p.add_argument("--instruction", help="as for rac eval")
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in generic corpus")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--inspect", type=Path, metavar="DIR", help="describe an existing set")
    p.set_defaults(func=cmd_calib)

    p = sub.add_parser("prune", help="prune a model layer by layer")
    _model_args(p)
    p.add_argument("--calib", type=Path, help="calibration set from 'rac calib'")
    p.add_argument("--method", choices=["magnitude", "wanda", "sparsegpt"], required=True)
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of weights pruned")
    p.add_argument("--pattern", help="N:M: N pruned of every M consecutive inputs, e.g. 2:4")
    p.add_argument("--scope", default="all", help="KIND[@LAYERS]: all|attn|mlp at all|"
                   "first-third|first-last-third|0-3,7 (default: all)")
    p.add_argument("--true-sequential", action="store_true",
                   help="also propagate inside each block (q/k/v, o, gate/up, down)")
    p.add_argument("--segment-weights", nargs="+", metavar="SEGMENT=W",
                   help="reweight tokens by segment, e.g. decode=2 (extension beyond the paper)")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT dampening")
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward batch")
    p.add_argument("--fp8", action="store_true", help="then quantize kept weights to FP8 E4M3")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("toy", help="the embedded tiny reasoning model")
    toy = p.add_subparsers(dest="toy_verb", required=True, metavar="ACTION")
    t = toy.add_parser("train", help="train the embedded model from scratch")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--work-dir", type=Path, help="checkpoints (default: OUT.work); resumed if present")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="default: one per core")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_toy_train)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars say what runs; the libraries' per-file bars are noise."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        args.func(args)
    except RacError as e:
        print(f"rac {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except ValueError as e:
        print(f"rac {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `rac calib --inspect DIR | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"rac {args.verb}: interrupted; finished work is kept, rerun to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
