"""Evaluation: accuracy (pass@1 over k samples, with its standard error), chain-of-thought length,
max-length hits, wall time and generated tokens/s, the metrics the paper reports.

Pruned reasoning models ramble, so length and max-length hits are first-class metrics here, not
diagnostics.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from contextlib import closing, nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from rac import models
from rac.batched import Journal, generate_all
from rac.generate import Backend, Engine, open_backend, request_seed
from rac.io import RacError, atomic_dir, atomic_write_text, check_output_dir, write_json
from rac.metrics import mean_se
from rac.models import THINK_CLOSE, prompt_ids
from rac.sampling import (
    GENERATION_CONFIG,
    SHIPPED_FIELDS,
    Sampling,
    shipped_generation_config,
)
from rac.tasks.grading import grade_problem
from rac.tasks.math import Grade
from rac.tasks.problems import Problem, answer_form, read_problems
from rac.vllm_support import top_p_identity


@dataclass(frozen=True)
class EvalConfig:
    """``instruction``: the user's text after every problem; None: the model's for each problem's
    form (math, stdin or function: ``answer_form``), see ``evaluate``.
    ``thinking`` None: whether the model has a think phase is detected (``models.thinks``);
    without one the whole completion is the chain of thought and the answer its last box."""

    sampling: Sampling
    samples: int = 1
    seed: int = 0
    batch_size: int = 64
    instruction: str | None = None
    thinking: bool | None = None

    def __post_init__(self) -> None:
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        if self.samples > 1 and self.sampling.temperature == 0:
            raise ValueError(f"{self.samples} samples of greedy decoding are one completion "
                             "repeated; sample (temperature > 0) or take 1 sample")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")


def cot_length(ids: list[int], think_close_id: int | None) -> int:
    """Tokens up to and including ``</think>``; all of them when the model never closed it."""
    if think_close_id is not None and think_close_id in ids:
        return ids.index(think_close_id) + 1
    return len(ids)


def grade_sample(text: str, problem: Problem, grade: Callable[[str, Problem, bool], Grade],
                 ids: list[int] | None, finish_reason: str | None, think_id: int | None,
                 thinking: bool = True) -> dict:
    g = grade(text, problem, thinking)
    return {"completion": text, "tokens": None if ids is None else len(ids),
            "cot_tokens": None if ids is None else cot_length(ids, think_id),
            "finish_reason": finish_reason, "extracted": g.extracted, "correct": g.correct,
            "grade": g.reason}


@dataclass(frozen=True)
class EvalSummary:
    """Accuracy (pass@1 over the samples of each problem) with its SE over problems; length,
    max-length and speed metrics where they are known (``rac grade`` may lack token counts)."""

    n_problems: int
    samples_per_problem: int
    accuracy: float
    accuracy_se: float
    mean_cot_tokens: float | None = None
    mean_cot_tokens_se: float | None = None
    sd_cot_tokens: float | None = None
    mean_completion_tokens: float | None = None
    generated_tokens: int | None = None
    max_hit_rate: float | None = None
    mean_prompt_tokens: float | None = None
    sd_prompt_tokens: float | None = None
    generation_s: float | None = None
    wall_s: float | None = None
    tokens_per_s: float | None = None
    resumed: int | None = None  # completions read from a journal; time and tokens/s are the rest's

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_json(cls, data: dict) -> EvalSummary:
        return cls(**data)


def summarize(rows: list[dict]) -> EvalSummary:
    """Sets each row's ``pass1`` and summarizes the rows."""
    for r in rows:
        r["pass1"] = statistics.fmean(s["correct"] for s in r["samples"])
    flat = [s for r in rows for s in r["samples"]]
    acc, acc_se = mean_se([r["pass1"] for r in rows])
    lengths: dict = {}
    if all(s["tokens"] is not None for s in flat):
        cot, cot_se = mean_se([s["cot_tokens"] for s in flat])
        lengths = {"mean_cot_tokens": cot, "mean_cot_tokens_se": cot_se,
                   "sd_cot_tokens": statistics.pstdev(s["cot_tokens"] for s in flat),
                   "mean_completion_tokens": statistics.fmean(s["tokens"] for s in flat),
                   "generated_tokens": sum(s["tokens"] for s in flat)}
    if all(s["finish_reason"] is not None for s in flat):
        lengths["max_hit_rate"] = statistics.fmean(s["finish_reason"] == "length" for s in flat)
    return EvalSummary(len(rows), len(rows[0]["samples"]), acc, acc_se, **lengths)


def think_close_id(tok: PreTrainedTokenizerBase, thinking: bool = True) -> int | None:
    """The id of ``</think>`` where the chain of thought ends, None without a think phase."""
    tid = tok.convert_tokens_to_ids(THINK_CLOSE) if thinking else None
    return None if tid is None or tid == tok.unk_token_id else tid


def evaluate(backend: Backend, tok: PreTrainedTokenizerBase, problems: list[Problem],
             cfg: EvalConfig, grade: Callable[[str, Problem, bool], Grade] | None = None,
             progress: bool = True, instructions: dict[str, str] | None = None,
             journal: Path | None = None, generator: dict | None = None) -> dict:
    """``instructions``: the text after a problem of each form when ``cfg.instruction`` is None
    (``evaluate_model`` passes the model's, ``instructions_for``); a form it lacks gets none. The
    result's ``instructions`` says which text each form got, and for how many problems.
    ``journal``: completions are kept there as they are made and an earlier run's are reused when
    the prompts, seeds, sampling and ``generator`` (what generates: model and engine) are the
    same (``rac.batched.Journal``)."""
    grade = grade or grade_problem
    thinking = models.thinks(tok) if cfg.thinking is None else cfg.thinking
    cfg = replace(cfg, thinking=thinking)
    think_id = think_close_id(tok, thinking)
    forms = [answer_form(p) for p in problems]
    texts = [cfg.instruction if cfg.instruction is not None else (instructions or {}).get(f, "")
             for f in forms]
    prompts = [prompt_ids(tok, p.problem, t, thinking) for p, t in zip(problems, texts)]
    requests = [(pi, s) for pi in range(len(problems)) for s in range(cfg.samples)]
    seeds = [request_seed(cfg.seed, problems[pi].id, s) for pi, s in requests]
    how = {"backend": backend.name, **top_p_identity(backend.name, cfg.sampling)}
    log = Journal(journal, {
        "requests": hashlib.sha256(json.dumps([prompts, requests, seeds]).encode()).hexdigest(),
        "sampling": asdict(cfg.sampling), **how, **(generator or {})},
        len(requests)) if journal else None
    resumed, earlier_s = (len(log.done), log.seconds) if log else (0, 0.0)
    t0 = time.perf_counter() - earlier_s  # the journal's completions took their time before
    with closing(log) if log else nullcontext():  # released for the next run, killed or not
        completions = generate_all(backend, [prompts[pi] for pi, _ in requests], cfg.sampling,
                                   seeds, cfg.batch_size, desc="eval", progress=progress, journal=log)
    gen_s = time.perf_counter() - t0
    rows: list[dict] = [{"id": p.id, "answer": p.answer, "prompt_tokens": len(prompts[i]),
                         "samples": []} for i, p in enumerate(problems)]
    for (pi, _), c in zip(requests, completions):
        text = tok.decode(c.ids, skip_special_tokens=True)
        rows[pi]["samples"].append(grade_sample(text, problems[pi], grade, c.ids, c.finish_reason,
                                                think_id, thinking))
    summary = summarize(rows)
    summary = replace(
        summary, mean_prompt_tokens=statistics.fmean(len(p) for p in prompts),
        sd_prompt_tokens=statistics.pstdev(len(p) for p in prompts), generation_s=gen_s,
        wall_s=time.perf_counter() - t0, resumed=resumed or None,
        tokens_per_s=summary.generated_tokens / gen_s if gen_s > 0 else 0.0)
    used = {f: {"instruction": t, "problems": forms.count(f)} for f, t in zip(forms, texts)}
    return {"summary": summary.to_json(), "config": {**asdict(cfg), **how},
            "instructions": dict(sorted(used.items())), "problems": rows}


def instructions_for(model: str | Path, problems: list[Problem]) -> dict[str, str]:
    """The model's instruction for each form of problem in ``problems``."""
    return models.instructions(models.defaults(model), problems, None)


def instruction_key(model: str | Path, problems_file: Path, override: str | None) -> dict:
    """What a cached result's key adds for the text after each problem: every answer form's text
    in the file (the user's ``override``, else the model's), so a changed instruction, in
    ``rac_model.json`` or on the command line, is never answered from the cache."""
    return {"instructions": models.instructions(models.defaults(model), read_problems(problems_file),
                                                override)}


def generation_config_markdown(used: Sampling, shipped: dict) -> list[str]:
    """What the model's generation_config.json asks for beside what the run used (nothing when
    the file sets no sampling setting)."""
    if not shipped:
        return []
    return [f"| sampling setting | the model's {GENERATION_CONFIG} | used |", "|---|---|---|",
            *[f"| {k} | {shipped.get(k, '')} | {getattr(used, k)} |" for k in SHIPPED_FIELDS], ""]


def instructions_markdown(used: dict) -> list[str]:
    """Which instruction followed which form of problem (a function problem is asked for the
    function, a stdin one for a program), and for how many."""
    lines = ["Instruction after each problem, by form:", ""] if used else []
    for form, u in used.items():
        text = f'"{u["instruction"]}"' if u["instruction"] else "none"
        lines.append(f"- {u['problems']} {form} problem(s): {text}")
    return lines + [""] if used else []


def summary_markdown(result: dict, title: str) -> str:
    s, c = result["summary"], result["config"]
    used = Sampling(**c["sampling"])
    return "\n".join([
        f"# {title}", "",
        f"{s['n_problems']} problems x {s['samples_per_problem']} sample(s), {used.describe()}, "
        f"max {used.max_new_tokens} new tokens, seed {c['seed']}.", "",
        *generation_config_markdown(used, result.get("model_generation_config", {})),
        *instructions_markdown(result.get("instructions", {})),
        *([] if c.get("thinking", True) else [
            "No think phase (detected, or --thinking off): the whole completion counts as the "
            "chain of thought and the answer is its last \\boxed{} (or code block).", ""]),
        "| metric | value |", "|---|---|",
        f"| accuracy (pass@1) | {s['accuracy']:.4f} +- {s['accuracy_se']:.4f} (SE) |",
        f"| mean CoT tokens | {s['mean_cot_tokens']:.1f} +- {s['mean_cot_tokens_se']:.1f} "
        f"(sd {s['sd_cot_tokens']:.1f}) |",
        f"| mean completion tokens | {s['mean_completion_tokens']:.1f} |",
        f"| mean prompt tokens | {s['mean_prompt_tokens']:.1f} (sd {s['sd_prompt_tokens']:.1f}) |",
        f"| max-length hit rate | {s['max_hit_rate']:.4f} |",
        f"| wall time | {s['wall_s']:.1f} s |",
        f"| generated tokens/s | {s['tokens_per_s']:.0f} |", "",
        *([f"Resumed: {s['resumed']} completions were read from an interrupted run's journal, with "
           "the generation time they took then.", ""] if s.get("resumed") else []),
    ])


def evaluate_model(model: str | Path, problems_file: Path, out: Path | None, cfg: EvalConfig,
                   engine: Engine | None = None, *, limit: int = 0, overwrite: bool = False,
                   progress: bool = True) -> dict:
    """``rac eval``: evaluate ``model`` on a problem file; writes eval.json and eval.md to ``out``,
    resuming an interrupted run from its journal beside ``out``."""
    engine = (engine or Engine()).resolved(model)
    problems = read_problems(problems_file)[: limit or None]
    if out is not None:
        check_output_dir(out, overwrite)
    tok = models.load_tokenizer(model, engine.trust_remote_code)
    cfg = replace(cfg, thinking=models.thinking_for(model, tok, cfg.thinking))
    journal = None if out is None else Path(out).parent / f".{Path(out).name}.journal.jsonl"
    with closing(open_backend(model, tok, engine)) as backend:  # the model: its top-level files
        result = evaluate(backend, tok, problems, cfg, progress=progress,  # (not a journal in it)
                          instructions=instructions_for(model, problems), journal=journal,
                          generator={"model": models.fingerprint(models.resolve(model), ("[!.]*",)),
                                     "engine": asdict(engine)})
    result["model"], result["engine"] = models.model_name(model), asdict(engine)  # dtype included
    result["model_generation_config"] = shipped_generation_config(model)
    result["problems_file"] = str(problems_file)
    if out is not None:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "eval.json", result)
            atomic_write_text(tmp / "eval.md", summary_markdown(result, f"rac eval: {result['model']}"))
        Journal.discard(journal)
    return result


def read_completions(path: Path) -> list[dict]:
    """Completions made elsewhere: a JSONL of {"id", "completion"[, "finish_reason"]} (one line per
    sample), or the eval.json of a previous ``rac eval``."""
    path = Path(path)
    if not path.is_file():
        raise RacError(f"completions file {path} does not exist")
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
            return [{"id": r["id"], "completion": s["completion"],
                     "finish_reason": s.get("finish_reason")}
                    for r in data["problems"] for s in r["samples"]]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise RacError(f"{path}: not the eval.json of 'rac eval' ({e})") from e
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            out.append({"id": str(row["id"]), "completion": str(row["completion"]),
                        "finish_reason": row.get("finish_reason")})
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise RacError(f"{path}:{n}: expected a JSON object with 'id' and 'completion'") from e
    if not out:
        raise RacError(f"completions file {path} is empty")
    return out


def grade_completions(problems_file: Path, completions_file: Path, out: Path | None, *,
                      tokenizer: str | Path | None = None, thinking: bool | None = None,
                      overwrite: bool = False) -> dict:
    """``rac grade``: the same grader and report as ``rac eval``, for completions made elsewhere.
    ``thinking`` None: detected from ``tokenizer`` when given, else on."""
    problems = read_problems(problems_file)
    if out is not None:
        check_output_dir(out, overwrite)
    by_id = {p.id: i for i, p in enumerate(problems)}
    tok = models.load_tokenizer(tokenizer) if tokenizer else None
    completions = read_completions(completions_file)
    unknown = [c["id"] for c in completions if c["id"] not in by_id]
    if unknown:
        raise RacError(f"completion for id {unknown[0]!r}, which {problems_file} does not hold")
    if thinking is None and tok is None and not any(THINK_CLOSE in c["completion"] for c in completions):
        # every answer would be graded missing ('no_think_close'): a wrong number, not a grade
        raise RacError(f"none of the completions in {completions_file} closes a think phase "
                       f"({THINK_CLOSE}); pass --thinking off for a model without one, or "
                       "--tokenizer MODEL to detect it")
    if thinking is None:
        thinking = models.thinking_for(tokenizer, tok, None) if tok else True
    think_id = think_close_id(tok, thinking) if tok else None
    rows = [{"id": p.id, "answer": p.answer, "samples": []} for p in problems]
    for c in completions:
        ids = tok(c["completion"], add_special_tokens=False)["input_ids"] if tok else None
        i = by_id[c["id"]]
        rows[i]["samples"].append(grade_sample(c["completion"], problems[i], grade_problem, ids,
                                               c["finish_reason"], think_id, thinking))
    missing = [r["id"] for r in rows if not r["samples"]]
    if missing:
        raise RacError(f"{len(missing)} problems have no completion (first: {missing[0]}); grade a "
                       "problem file that matches the completions")
    result = {"summary": summarize(rows).to_json(), "thinking": thinking, "problems_file": str(problems_file),
              "completions_file": str(completions_file), "problems": rows}
    if out is not None:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            write_json(tmp / "grade.json", result)
            atomic_write_text(tmp / "grade.md", grade_markdown(result))
    return result


def grade_markdown(result: dict) -> str:
    s = result["summary"]
    lines = [f"# rac grade: {result['completions_file']}", "",
             f"{s['n_problems']} problems x {s['samples_per_problem']} sample(s) of "
             f"{result['problems_file']}.", "", "| metric | value |", "|---|---|",
             f"| accuracy (pass@1) | {s['accuracy']:.4f} +- {s['accuracy_se']:.4f} (SE) |"]
    if "mean_cot_tokens" in s:
        lines.append(f"| mean CoT tokens | {s['mean_cot_tokens']:.1f} +- {s['mean_cot_tokens_se']:.1f} |")
    if "max_hit_rate" in s:
        lines.append(f"| max-length hit rate | {s['max_hit_rate']:.4f} |")
    return "\n".join(lines + [""])
