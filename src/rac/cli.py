"""The ``rac`` command line: parse arguments, call the library, print one-line errors.

This is the only module that knows about arguments and exit codes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from safetensors import SafetensorError

from rac.io import RacError
from rac.tasks.splits import SPLITS

THINKING = {"auto": None, "on": True, "off": False}  # --thinking: detected, or forced

EXIT_USER_ERROR = 2


def _threads(n: int) -> None:
    import torch

    if n:
        torch.set_num_threads(n)


# -- rac problems ---------------------------------------------------------------------------------

def cmd_problems(a: argparse.Namespace) -> None:
    from rac.tasks.generators import generate
    from rac.tasks.problems import write_problems

    families = tuple(a.families.split(",")) if a.families else None
    made = generate(a.task, a.n, a.seed, a.split, families)
    write_problems(a.out, made)
    kinds = ", ".join(sorted({p.extra["family"] for p in made}))
    print(f"wrote {len(made)} {a.split} {a.task} problems ({kinds}) to {a.out}")


# -- rac eval -------------------------------------------------------------------------------------

def _engine(a: argparse.Namespace):
    from rac.generate import Engine

    return Engine(backend=a.backend, device=a.device, tensor_parallel=a.tensor_parallel,
                  trust_remote_code=a.trust_remote_code)


def _sampling(a: argparse.Namespace, stage: str):
    from rac.sampling import sampling_for

    return sampling_for(a.model, stage, a.temperature, a.top_p, a.max_new_tokens, top_k=a.top_k,
                        repetition_penalty=a.repetition_penalty,
                        generation_config=not a.ignore_generation_config)


def cmd_eval(a: argparse.Namespace) -> None:
    from rac.evaluate import EvalConfig, evaluate_model, summary_markdown

    _threads(a.threads)
    cfg = EvalConfig(_sampling(a, "eval"), samples=a.samples, seed=a.seed,
                     batch_size=a.batch_size, instruction=a.instruction,
                     thinking=THINKING[a.thinking])
    result = evaluate_model(a.model, a.problems, a.out, cfg, _engine(a), limit=a.limit,
                            overwrite=a.overwrite)
    print(summary_markdown(result, f"rac eval: {result['model']}"))
    print(f"results: {Path(a.out) / 'eval.json'}, {Path(a.out) / 'eval.md'}")


def cmd_grade(a: argparse.Namespace) -> None:
    from rac.evaluate import grade_completions, grade_markdown

    result = grade_completions(a.problems, a.completions, a.out, tokenizer=a.tokenizer,
                               thinking=THINKING[a.thinking], overwrite=a.overwrite)
    print(grade_markdown(result))
    print(f"results: {Path(a.out) / 'grade.json'}, {Path(a.out) / 'grade.md'}")


# -- rac traces -----------------------------------------------------------------------------------

def cmd_traces(a: argparse.Namespace) -> None:
    from rac.calibrate.traces import TracesConfig, make_traces

    _threads(a.threads)
    cfg = TracesConfig(_sampling(a, "trace"), seed=a.seed, samples_per_prompt=a.samples_per_prompt,
                       budget_tokens=a.budget_tokens, batch_size=a.batch_size,
                       only_correct=a.only_correct, instruction=a.instruction,
                       thinking=THINKING[a.thinking])
    done = make_traces(a.model, a.problems, a.out, cfg, _engine(a), overwrite=a.overwrite)
    note = "" if done["budget_reached"] else " (budget not reached: the problems ran out)"
    kept = f", kept {done['kept']} correct" if a.only_correct else ""
    print(f"{done['traces']} traces{kept}, {done['tokens']} tokens of {a.budget_tokens}{note}; "
          f"store: {a.out}")


# -- rac calib ------------------------------------------------------------------------------------

def cmd_calib(a: argparse.Namespace) -> None:
    from rac import models
    from rac.calibrate import calib

    if a.inspect:
        tok = models.load_tokenizer(a.tokenizer) if a.tokenizer else None
        print(calib.inspect(a.inspect, tok))
        return
    for flag in ("source", "tokenizer", "budget_tokens", "out"):
        if getattr(a, flag) is None:
            raise RacError(f"--{flag.replace('_', '-')} is required (or use --inspect DIR)")
    cfg = calib.CalibConfig(
        a.source, a.budget_tokens, text=[Path(t) for t in a.text or []],
        builtin_text=a.builtin_text, problems=a.problems,
        traces=a.traces, pack=a.pack, allow_short=a.allow_short, instruction=a.instruction,
        seed=a.seed, thinking=THINKING[a.thinking])
    wrote, info = calib.make_calib(a.tokenizer, cfg, a.out, trust_remote_code=a.trust_remote_code,
                                   overwrite=a.overwrite)
    seg = ", ".join(f"{k} {v}" for k, v in info["segment_tokens"].items() if v)
    print(f"{'wrote' if wrote else 'already built:'} {a.source} calibration set, {info['tokens']} "
          f"tokens in {info['rows']} rows ({seg}) at {a.out}")


# -- rac prune ------------------------------------------------------------------------------------

def cmd_prune(a: argparse.Namespace) -> None:
    from rac import models
    from rac.calibset import parse_segment_weights
    from rac.prune.config import PruneConfig, Scope
    from rac.prune.masks import Target
    from rac.prune.run import prune_to_dir
    from rac.prune.sparsegpt import SparseGPTConfig
    from rac.prune.wanda import WandaConfig

    _threads(a.threads)
    cfg = PruneConfig.with_recipe(
        a.recipe, method=a.method, target=Target.parse(a.sparsity, a.pattern),
        scope=Scope.parse(a.scope), true_sequential=a.true_sequential,
        sparsegpt=SparseGPTConfig(blocksize=a.blocksize, percdamp=a.percdamp),
        wanda=WandaConfig(group=a.wanda_group),
        segment_weights=parse_segment_weights(a.segment_weights or []),
        balance_segments=a.balance_segments or None, dense_targets=a.dense_targets or None,
        refine_epochs=a.refine_epochs, refine_lr=a.refine_lr, owl_lambda=a.owl_lambda or None,
        error_span=a.error_span or None, error_step=a.error_step, mask_swaps=a.mask_swaps or None,
        device=models.pick_device(a.device))
    report = prune_to_dir(a.model, a.calib, cfg, a.out, fp8=a.fp8, fp8_export=a.fp8_export,
                          batch_tokens=a.batch_tokens, trust_remote_code=a.trust_remote_code,
                          overwrite=a.overwrite)
    t = report.totals
    err = t.mean_relative_error
    print(f"pruned {t.linears} linears with {cfg.method} to {cfg.target} "
          f"({t.sparsity_in_scope:.4f} of weights in scope are zero)"
          + (f", mean relative error {err:.4f}" if err is not None else "")
          + f", {t.wall_s:.1f} s, peak RSS {t.peak_rss_mb:.0f} MB -> {a.out}")


# -- rac sweep / recon / demo ---------------------------------------------------------------------

def _report_paths(out: Path) -> str:
    figs = sorted(p.name for p in Path(out).glob("*.png"))
    heat = Path(out) / "recon" / "recon_heatmap.png"
    return (f"report: {Path(out) / 'report.md'}\nresults: {Path(out) / 'results.json'}\n"
            f"figures: {', '.join(str(Path(out) / f) for f in figs)}"
            + (f", {heat}" if heat.exists() else ""))


def _show(line: str) -> None:
    print(line, flush=True)


def cmd_sweep(a: argparse.Namespace) -> None:
    from rac.experiments import config, report
    from rac.experiments.sweep import sweep_and_report

    cfg = config.load(a.config)
    result, rep = sweep_and_report(cfg, a.out, command=" ".join(["rac"] + sys.argv[1:]),
                                   show=_show, cache=a.cache)
    print(rep.table1)
    print(f"done in {result['wall_s']:.0f} s: " + report.stage_breakdown(result["stages"]))
    print(_report_paths(a.out))


def cmd_search(a: argparse.Namespace) -> None:
    from rac import models
    from rac.evaluate import EvalConfig
    from rac.experiments.search import SearchConfig, Tolerance, search
    from rac.prune.config import PruneConfig, Scope
    from rac.prune.masks import Target

    _threads(a.threads)
    pattern = Target.parse(None, a.pattern) if a.pattern != "unstructured" else None
    cfg = SearchConfig(
        prune=PruneConfig.with_recipe(a.recipe, method=a.method, target=Target(0.5),
                                      scope=Scope.parse(a.scope),
                                      device=models.pick_device(a.device)),
        tolerance=Tolerance(a.tolerance, a.keep, a.confidence),
        eval=EvalConfig(_sampling(a, "eval"), samples=a.samples, seed=a.seed,
                        batch_size=a.batch_size, instruction=a.instruction,
                        thinking=THINKING[a.thinking]),
        pattern=pattern, step=a.step, max_sparsity=a.max_sparsity)
    result = search(a.model, a.calib, a.problems, a.test_problems, cfg, a.out, show=_show)
    print(f"largest level within tolerance: {result['chosen']['level']} (sparsity "
          f"{result['chosen']['sparsity']:.3f}); test accuracy {result['test_accuracy']:.3f} +- "
          f"{result['test_accuracy_se']:.3f} (dense {result['dense_test_accuracy']:.3f}) on "
          f"{result['test_problems']} problems")
    print(f"report: {Path(a.out) / 'search.md'}; plot: {Path(a.out) / 'search.png'}; "
          f"model: {Path(a.out) / 'model'}")


def cmd_recon(a: argparse.Namespace) -> None:
    from rac.recon import recon

    _threads(a.threads)
    res = recon(a.dense, a.model_a, a.model_b, a.problems, a.out, n=a.n,
                max_new_tokens=a.max_new_tokens, labels=tuple(a.labels), engine=_engine(a),
                overwrite=a.overwrite)
    for lab, v in res["per_model"].items():
        print(f"{lab}: mean error prompt {v['mean_error_prompt']:.4f}, "
              f"decode {v['mean_error_decode']:.4f}")
    print(f"heatmap: {Path(a.out) / 'recon_heatmap.png'}; data: {Path(a.out) / 'recon.json'}")


def cmd_demo(a: argparse.Namespace) -> None:
    from rac.experiments import config, demo, report
    from rac.experiments.sweep import sweep_and_report

    cfg = config.from_dict({**(demo.FULL if a.full else demo.DEMO),
                            **({"threads": a.threads} if a.threads else {})})
    out = a.out or Path("runs") / ("demo-full" if a.full else "demo")
    result, rep = sweep_and_report(cfg, out, command="rac demo" + (" --full" if a.full else ""),
                                   show=_show)
    print()
    print(rep.table1)
    for method, comps in rep.comparisons.items():
        first = next((c for c in comps if c.beyond_2se), None)
        print(f"{method}: RAC vs prompt-only first differ by more than 2 SE at "
              + (f"{first.target}." if first else "no sparsity in this grid."))
    print(f"done in {result['wall_s']:.0f} s: " + report.stage_breakdown(result["stages"]))
    print(_report_paths(out))


# -- rac toy train --------------------------------------------------------------------------------

def cmd_toy_train(a: argparse.Namespace) -> None:
    from dataclasses import asdict, replace

    from rac.io import check_output_dir
    from rac.toy.train import TrainConfig, train

    overrides = {k: getattr(a, k) for k in ("steps", "seed", "threads") if getattr(a, k) is not None}
    cfg = replace(TrainConfig(), **overrides)
    check_output_dir(a.out, a.overwrite)
    work = a.work_dir or a.out.with_name(a.out.name + ".work")
    print("config:", json.dumps(asdict(cfg)))
    info = train(cfg, a.out, work, overwrite=a.overwrite)
    print(f"trained {info['parameters']} parameters in {info['train_seconds']:.0f} s "
          f"with {info['threads']} thread(s); saved to {a.out}")


# -- argument parsing -----------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """Bad arguments get one line (what is wrong, where to look) and exit status 2, not the usage."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="Hugging Face model directory, or 'embedded'")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda if present)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow code shipped in the model directory to run (off: never runs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")


def _recipe_arg(p: argparse.ArgumentParser) -> None:
    from rac.prune.config import RECIPES

    p.add_argument("--recipe", choices=list(RECIPES), default="paper",
                   help="paper: the published method (default); best: the options beyond it that "
                   "measured best on the embedded model (block refinement, 20 epochs)")


def _backend_args(p: argparse.ArgumentParser) -> None:
    from rac.generate import BACKENDS

    p.add_argument("--backend", choices=BACKENDS, default="transformers",
                   help="generation backend (vllm: optional extra, GPU)")
    p.add_argument("--tensor-parallel", type=int, default=1, help="vLLM tensor parallel size")


def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--temperature", type=float, help="0 = greedy (default: the model's)")
    p.add_argument("--top-p", type=float, help="nucleus sampling (default: the model's)")
    p.add_argument("--max-new-tokens", type=int, help="token limit per completion")
    p.add_argument("--top-k", type=int, help="sample from the k most likely tokens, 0 = off "
                   "(default: the model's generation_config.json, else off)")
    p.add_argument("--repetition-penalty", type=float, help="1 = off (default: the model's "
                   "generation_config.json, else off)")
    p.add_argument("--ignore-generation-config", action="store_true",
                   help="top-k and repetition penalty off unless given, whatever the model's "
                   "generation_config.json says")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--instruction", help="text appended to each problem (default: the R1 "
                   "instruction for real models, none for the embedded model)")
    _thinking_arg(p)


def _thinking_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--thinking", choices=list(THINKING), default="auto",
                   help="whether the model has a <think> phase (auto: detected from its "
                   "tokenizer); off: the whole completion is the chain of thought and the "
                   "answer is its last \\boxed{}")


def build_parser() -> argparse.ArgumentParser:
    from rac.calibrate.calib import SOURCES
    from rac.prune.config import METHODS
    from rac.prune.wanda import GROUPS
    from rac.tasks.generators import TASKS

    parser = Parser(prog="rac", description="Reasoning-aware compression.")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    p = sub.add_parser("problems", help="write synthetic reasoning problems (JSONL)")
    p.add_argument("--task", default="arith", choices=TASKS, help="built-in task (default: arith)")
    p.add_argument("--n", type=int, required=True, help="number of problems")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="test", choices=SPLITS,
                   help="disjoint by construction (a problem's split is a hash of its skeleton: "
                        "family and numbers or statement parameters, not surface text)")
    p.add_argument("--families", help="comma-separated subset of add,mul,word")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_problems)

    p = sub.add_parser("eval", help="evaluate a model on a problem file")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="JSONL problem file")
    p.add_argument("--samples", type=int, default=1, help="samples per problem (pass@1 over k)")
    p.add_argument("--limit", type=int, default=0, help="only the first N problems")
    _backend_args(p)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("grade", help="grade completions made elsewhere (math or code)")
    p.add_argument("--problems", type=Path, required=True, help="JSONL problem file")
    p.add_argument("--completions", type=Path, required=True,
                   help="JSONL of {id, completion} per sample, or a 'rac eval' eval.json")
    p.add_argument("--tokenizer", help="model directory for token counts (optional)")
    _thinking_arg(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_grade)

    p = sub.add_parser("traces", help="generate the dense model's own chains of thought")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--problems", type=Path, required=True, help="calibration problems (JSONL)")
    p.add_argument("--samples-per-prompt", type=int, default=1)
    p.add_argument("--budget-tokens", type=int, default=1_000_000,
                   help="stop once kept traces hold this many prompt + generated tokens")
    p.add_argument("--only-correct", action="store_true", help="keep only correct traces")
    _backend_args(p)
    p.add_argument("--out", type=Path, required=True, help="trace store directory (resumable)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_traces)

    p = sub.add_parser("calib", help="build a calibration set (generic/prompt/rac/offpolicy)")
    p.add_argument("--source", choices=SOURCES)
    p.add_argument("--tokenizer", help="the target model directory, or 'embedded'")
    p.add_argument("--budget-tokens", type=int, help="exact token budget of the set")
    p.add_argument("--text", nargs="+", help="generic: .txt (blank-line separated), .jsonl "
                   "with 'text', or a datasets directory")
    p.add_argument("--builtin-text", action="store_true",
                   help="generic: rac's built-in synthetic everyday prose (the default for the "
                   "embedded model; a small stand-in for C4 for any other)")
    p.add_argument("--problems", type=Path, help="prompt/reference: calibration problems")
    p.add_argument("--traces", type=Path, help="rac/offpolicy: a trace store")
    p.add_argument("--pack", type=int, default=0, help="pack into windows of LEN (0: natural)")
    p.add_argument("--allow-short", action="store_true", help="accept fewer tokens than budgeted")
    p.add_argument("--instruction", help="as for rac eval")
    _thinking_arg(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the built-in generic corpus")
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--out", type=Path)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--inspect", type=Path, metavar="DIR", help="describe an existing set")
    p.set_defaults(func=cmd_calib)

    p = sub.add_parser("prune", help="prune a model layer by layer")
    _model_args(p)
    p.add_argument("--calib", type=Path, help="calibration set from 'rac calib'")
    p.add_argument("--method", choices=METHODS, required=True)
    p.add_argument("--sparsity", type=float, help="unstructured: fraction of weights pruned")
    p.add_argument("--pattern", help="N:M: N pruned of every M consecutive inputs, e.g. 2:4")
    p.add_argument("--scope", default="all", help="KIND[@LAYERS]: all|attn|mlp at all|"
                   "first-third|first-last-third|0-3,7 (default: all)")
    p.add_argument("--true-sequential", action="store_true",
                   help="also propagate inside each block (q/k/v, o, gate/up, down)")
    p.add_argument("--segment-weights", nargs="+", metavar="SEGMENT=W",
                   help="reweight tokens by segment, e.g. decode=2 (extension beyond the paper)")
    p.add_argument("--balance-segments", action="store_true",
                   help="weigh segments so that prompt and decode tokens have equal shares of the "
                   "statistics (the report gives the weights used)")
    p.add_argument("--blocksize", type=int, default=128, help="SparseGPT column block")
    p.add_argument("--percdamp", type=float, default=0.01, help="SparseGPT dampening")
    p.add_argument("--dense-targets", action="store_true",
                   help="SparseGPT: fit each layer to the dense model's outputs on the pruned "
                   "model's inputs (corrects error accumulated in earlier blocks; beyond the paper)")
    _recipe_arg(p)
    p.add_argument("--refine-epochs", type=int, default=None,
                   help="then N epochs of Adam per block on its kept weights, to match the dense "
                   "block's outputs on the calibration tokens (beyond the paper; default: the "
                   "recipe's)")
    p.add_argument("--refine-lr", type=float, default=None,
                   help="Adam's step size relative to each weight matrix's kept-weight RMS "
                   "(default 0.01)")
    p.add_argument("--owl-lambda", type=float, default=0.0,
                   help="> 0: OWL layer sparsities within target +- LAMBDA at the same total "
                   "(unstructured; beyond the paper)")
    p.add_argument("--error-span", type=float, default=0.0,
                   help="> 0: per-block sparsities within target +- SPAN at the same total, "
                   "chosen from each block's reconstruction error at a grid of sparsities "
                   "(unstructured; beyond the paper)")
    p.add_argument("--error-step", type=float, default=0.025, help="that grid's step")
    p.add_argument("--mask-swaps", type=int, default=0,
                   help="magnitude/Wanda: then up to N prune-and-grow swaps per row that lower "
                   "the layer's reconstruction error (DSnoT-style; beyond the paper)")
    p.add_argument("--wanda-group", choices=GROUPS, default="row",
                   help="where Wanda compares scores: per output row (the paper) or per layer")
    p.add_argument("--batch-tokens", type=int, default=8192, help="tokens per forward batch")
    p.add_argument("--fp8", action="store_true",
                   help="then quantize the decoder's linear weights to FP8 E4M3 (per channel); "
                   "the saved weights are dequantized so a CPU can evaluate them")
    p.add_argument("--fp8-export", action="store_true",
                   help="--fp8, and also write OUT/fp8-compressed-tensors (vLLM's FP8 format; "
                   "needs the llmcompressor extra)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("search", help="the largest sparsity within a tolerance of dense accuracy")
    _model_args(p)
    _sampling_args(p)
    p.add_argument("--calib", type=Path, required=True, help="calibration set from 'rac calib'")
    p.add_argument("--problems", type=Path, required=True, help="validation problems (search)")
    p.add_argument("--test-problems", type=Path, required=True,
                   help="test problems: the chosen model is evaluated on them once")
    tol = p.add_mutually_exclusive_group(required=True)
    tol.add_argument("--tolerance", type=float, help="accuracy points below dense allowed")
    tol.add_argument("--keep", type=float, help="fraction of dense accuracy to keep")
    p.add_argument("--confidence", type=float, default=0.95,
                   help="one-sided confidence that a level is within tolerance")
    p.add_argument("--pattern", default="unstructured",
                   help="unstructured (search the sparsity) or N:M (search how many leading "
                   "blocks get the pattern)")
    p.add_argument("--method", choices=METHODS, default="sparsegpt")
    _recipe_arg(p)
    p.add_argument("--scope", default="all", help="kind of linears (all, attn, mlp)")
    p.add_argument("--step", type=float, default=0.02, help="unstructured: sparsity grid step")
    p.add_argument("--max-sparsity", type=float, default=0.9)
    p.add_argument("--samples", type=int, default=1)
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("sweep", help="run a grid from a TOML config, with caching and resume")
    p.add_argument("config", type=Path, help="TOML config (see docs/sweep.md)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--cache", type=Path,
                   help="stage cache shared with other sweeps of the same model (default: OUT/cache)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("recon", help="token-wise last-layer error of two pruned models (Figure 2)")
    p.add_argument("dense", help="the dense model directory, or 'embedded'")
    p.add_argument("model_a", type=Path)
    p.add_argument("model_b", type=Path)
    p.add_argument("--problems", type=Path, required=True, help="held-out problems")
    p.add_argument("--n", type=int, default=20, help="number of problems")
    p.add_argument("--max-new-tokens", type=int, help="rollout length (default: the model's)")
    p.add_argument("--labels", nargs=2, default=["A", "B"])
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--device", default="auto", help="for the rollouts (transformers backend)")
    p.add_argument("--trust-remote-code", action="store_true")
    _backend_args(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_recon)

    p = sub.add_parser("demo", help="the whole pipeline on the embedded model")
    p.add_argument("--full", action="store_true", help="the reference grid (docs/results)")
    p.add_argument("--out", type=Path, help="default: runs/demo or runs/demo-full")
    p.add_argument("--threads", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("toy", help="the embedded tiny reasoning model")
    toy = p.add_subparsers(dest="toy_verb", required=True, metavar="ACTION")
    t = toy.add_parser("train", help="train the embedded model from scratch")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--work-dir", type=Path, help="checkpoints (default: OUT.work); resumed if present")
    t.add_argument("--steps", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--threads", type=int, help="default: 1 (measured fastest); 0: one per core")
    t.add_argument("--overwrite", action="store_true")
    t.set_defaults(func=cmd_toy_train)
    return parser


def _quiet_libraries() -> None:
    """Our own progress bars say what runs; the libraries' per-file bars are noise."""
    import datasets
    import huggingface_hub
    import transformers

    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, or a bad argument already reported in one line
        return e.code if isinstance(e.code, int) else EXIT_USER_ERROR
    _quiet_libraries()
    try:
        args.func(args)
    except (RacError, ValueError) as e:
        print(f"rac {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `rac calib --inspect DIR | head`
        sys.stderr.close()
        return 0
    except (OSError, SafetensorError) as e:  # disk full, permissions: the environment, not a bug
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        print(f"rac {args.verb}: error: cannot read or write{where}: {reason}; "
              "nothing partial was kept", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"rac {args.verb}: interrupted; finished work is kept, rerun to continue",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
