"""Building calibration sets: generic text, prompt-only, RAC (prompt + on-policy CoT), off-policy
CoT, and the reference-solution control, all cut to the same token budget and written in the one
format ``rac.calibset`` defines. Padding only appears with ``--pack`` and is always masked.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from rac import calibset, models
from rac.calibrate import generic
from rac.calibrate.traces import Trace, load_traces
from rac.calibset import DECODE, GENERIC, PAD, PROMPT, Row
from rac.io import RacError
from rac.models import prompt_ids
from rac.tasks.problems import Problem, answer_form, read_problems

SOURCES = ("generic", "prompt", "rac", "offpolicy", "reference")
# the sources a seed does not change: their sets are the problems' own tokens, in file order
SEEDLESS = ("prompt", "reference")


@dataclass(frozen=True)
class CalibConfig:
    """One set: its source, its exact token budget and the inputs that source needs (``text``
    for generic, ``problems`` for prompt/reference, ``traces`` for rac/offpolicy). ``pack`` > 0
    packs into windows of that length; ``instruction`` None is the model's."""

    source: str
    budget_tokens: int
    text: list[Path] = field(default_factory=list)
    builtin_text: bool = False  # generic: the built-in synthetic prose (the embedded model's C4)
    problems: Path | None = None
    traces: Path | None = None
    pack: int = 0
    allow_short: bool = False
    instruction: str | None = None
    seed: int = 0  # shuffles generic documents
    thinking: bool | None = None  # None: detected (``models.thinks``)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"unknown source {self.source!r}; use {', '.join(SOURCES)}")
        if self.budget_tokens < 1:
            raise ValueError(f"the token budget must be >= 1, got {self.budget_tokens}")
        if self.pack < 0:
            raise ValueError(f"the pack length must be >= 0, got {self.pack}")


@dataclass(frozen=True)
class Sequence:
    ids: list[int]
    segment: list[int]
    origin: str = ""  # the problem it renders ("" for generic text): the set records its problems


def from_documents(tok: PreTrainedTokenizerBase, documents: Iterable[str]) -> Iterator[Sequence]:
    """Generic text (the paper's C4), each document followed by EOS."""
    for doc in documents:
        ids = tok(doc)["input_ids"] + [tok.eos_token_id]
        yield Sequence(ids, [GENERIC] * len(ids))


def from_prompts(tok: PreTrainedTokenizerBase, problems: Iterable[Problem],
                 instructions: dict[str, str], thinking: bool = True) -> Iterator[Sequence]:
    """Prompt-only: the problem rendered through the chat template, up to ``<think>\\n``, with the
    instruction of its answer form (``instructions``), as evaluation renders it."""
    for p in problems:
        ids = prompt_ids(tok, p.problem, instructions[answer_form(p)], thinking)
        yield Sequence(ids, [PROMPT] * len(ids), p.id)


def from_traces(traces: Iterable[Trace]) -> Iterator[Sequence]:
    """RAC: prompt ids followed by the completion ids exactly as the model generated them."""
    for t in traces:
        yield Sequence(t.prompt_ids + t.completion_ids,
                       [PROMPT] * len(t.prompt_ids) + [DECODE] * len(t.completion_ids), t.problem_id)


def from_foreign_traces(traces: Iterable[Trace], source_tok: PreTrainedTokenizerBase,
                        tok: PreTrainedTokenizerBase, instruction: str, thinking: bool = True
                        ) -> Iterator[Sequence]:
    """Off-policy with another tokenizer: the prompt is rendered by the target's chat template and
    the completion text re-tokenized (the only place where decode/re-encode is unavoidable)."""
    for t in traces:
        head = prompt_ids(tok, t.problem, instruction, thinking)
        text = source_tok.decode(t.completion_ids, skip_special_tokens=True)
        tail = tok(text, add_special_tokens=False)["input_ids"]
        if t.finish_reason == "stop":
            tail.append(tok.eos_token_id)
        yield Sequence(head + tail, [PROMPT] * len(head) + [DECODE] * len(tail), t.problem_id)


def from_reference(tok: PreTrainedTokenizerBase, problems: Iterable[Problem],
                   instructions: dict[str, str], thinking: bool = True) -> Iterator[Sequence]:
    """Control: prompt + the task's own reference solution as the chain of thought."""
    for p in problems:
        solution = p.extra.get("solution")
        if not solution:
            raise RacError(f"problem {p.id} has no 'solution'; --source reference needs them")
        head = prompt_ids(tok, p.problem, instructions[answer_form(p)], thinking)
        close = "\n</think>" if thinking else ""
        text = f"{solution}{close}\nThe answer is \\boxed{{{p.answer}}}."
        tail = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        yield Sequence(head + tail, [PROMPT] * len(head) + [DECODE] * len(tail), p.id)


def take_budget(seqs: Iterable[Sequence], budget: int) -> tuple[list[Sequence], int]:
    """Sequences in order until exactly ``budget`` tokens (the last one cut); returns the tokens
    actually available when there are fewer."""
    out, total = [], 0
    for s in seqs:
        if total >= budget:
            break
        keep = min(len(s.ids), budget - total)
        out.append(Sequence(s.ids[:keep], s.segment[:keep], s.origin))
        total += keep
    return out, total


def pack(seqs: list[Sequence], length: int, pad_id: int) -> list[Row]:
    """Concatenate into windows of ``length``; the last window is padded and masked."""
    ids = [t for s in seqs for t in s.ids]
    seg = [g for s in seqs for g in s.segment]
    rows = []
    for k in range(0, len(ids), length):
        w_ids, w_seg = ids[k:k + length], seg[k:k + length]
        pad = length - len(w_ids)
        rows.append(Row(w_ids + [pad_id] * pad, [1] * len(w_ids) + [0] * pad, w_seg + [PAD] * pad))
    return rows


def build(seqs: Iterable[Sequence], budget: int, pad_id: int, pack_len: int = 0,
          allow_short: bool = False) -> tuple[list[Row], dict]:
    chosen, total = take_budget(seqs, budget)
    if total < budget and not allow_short:
        raise RacError(f"only {total} tokens are available for a budget of {budget}; "
                       "give more input (or, with 'rac calib', pass --allow-short to continue with "
                       "what there is)")
    if total == 0:
        raise RacError("the calibration inputs hold no tokens")
    if pack_len:
        rows = pack(chosen, pack_len, pad_id)
    else:
        rows = [Row(s.ids, [1] * len(s.ids), s.segment) for s in chosen]
    info = {"tokens": total, "budget_tokens": budget, "sequences": len(chosen), "rows": len(rows),
            "pack": pack_len, "segment_tokens": calibset.segment_counts(rows)}
    origins = list(dict.fromkeys(s.origin for s in chosen if s.origin))
    return rows, info | ({"problems": origins} if origins else {})


def inspect(path: Path, tok: PreTrainedTokenizerBase | None = None, bins: int = 10) -> str:
    cset = calibset.read(path)
    info = cset.info
    lengths = [sum(r.mask) for r in cset.rows]
    lines = [f"calibration set {path}: source {info.get('source')}, {info['tokens']} tokens "
             f"(budget {info['budget_tokens']}), {info['rows']} rows"
             + (f", from {len(info['problems'])} problems" if "problems" in info else ""),
             "tokens per segment: " + ", ".join(f"{k} {v}" for k, v in
                                                info["segment_tokens"].items())]
    lo, hi = min(lengths), max(lengths)
    width = max(1, -(-(hi - lo + 1) // bins))
    hist = Counter((n - lo) // width for n in lengths)
    peak = max(hist.values())
    lines.append("sequence length histogram (unmasked tokens):")
    for b in range(-(-(hi - lo + 1) // width)):
        lines.append(f"  {lo + b * width:6d}-{lo + (b + 1) * width - 1:<6d} "
                     f"{'#' * round(40 * hist.get(b, 0) / peak):<40} {hist.get(b, 0)}")
    if tok is not None:
        ids, seg = cset.rows[0].ids, cset.rows[0].segment
        parts, start = [], 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or seg[i] != seg[start]:
                parts.append(f"[{calibset.NAMES[seg[start]]}]" + tok.decode(ids[start:i]))
                start = i
        lines.append("first sequence, decoded:")
        lines.append("".join(parts)[:2000])
    return "\n".join(lines)


def read_documents(paths: list[Path]) -> list[str]:
    """Generic documents from .txt files (blank-line separated), .jsonl files with 'text', or
    ``datasets`` directories with a 'text' column."""
    docs: list[str] = []
    for f in map(Path, paths):
        if f.is_dir():
            try:
                docs += list(datasets.load_from_disk(str(f))["text"])
            except (FileNotFoundError, KeyError, ValueError) as e:
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


def _foreign_instruction(meta: dict, defaults: models.ModelDefaults, override: str | None) -> str:
    """The target model's instruction for another model's traces: that of the store's one answer
    form (math stores predate the record of forms); a store of mixed forms is refused, since a
    trace does not say which form its problem had."""
    forms = meta.get("forms", {"math": 1})
    if len(forms) > 1:
        raise RacError(f"the traces hold problems of several answer forms ({', '.join(forms)}); "
                       "build an off-policy set from traces of one form (split the problem file)")
    return models.instruction_for(defaults, next(iter(forms)), override)


def make_calib(tokenizer: str | Path, cfg: CalibConfig, out: Path, *,
               trust_remote_code: bool = False, overwrite: bool = False) -> tuple[bool, dict]:
    """``rac calib``: build one source's set for the model ``tokenizer``; returns (written, info).
    Nothing is written when ``out`` already holds this very set."""
    source = cfg.source
    tok = models.load_tokenizer(tokenizer, trust_remote_code)
    defaults = models.defaults(tokenizer)
    thinking = models.thinking_for(tokenizer, tok, cfg.thinking)
    inputs: dict = {}

    def need(flag: str, value):
        if not value:
            raise RacError(f"--source {source} needs --{flag}")
        inputs[flag] = str(value)
        return value

    if source == "generic":
        if cfg.text:
            docs = read_documents(cfg.text)
            inputs["text"] = [str(t) for t in cfg.text]
        elif cfg.builtin_text or str(tokenizer) == models.EMBEDDED:
            docs = generic.corpus(20000, cfg.seed)
            inputs["text"] = f"built-in corpus, seed {cfg.seed}"
        else:
            raise RacError("--source generic needs --text FILE... (text, JSONL with 'text', or a "
                           "datasets directory), or --builtin-text for rac's synthetic prose")
        random.Random(cfg.seed).shuffle(docs)
        seqs = from_documents(tok, docs)
    elif source in ("prompt", "reference"):
        probs = read_problems(need("problems", cfg.problems))
        texts = models.instructions(defaults, probs, cfg.instruction)
        seqs = (from_prompts if source == "prompt" else from_reference)(tok, probs, texts, thinking)
    else:
        traces = need("traces", cfg.traces)
        meta, kept = load_traces(traces)
        same_tok = meta["tokenizer_fingerprint"] == models.tokenizer_fingerprint(tok)
        if source == "rac":
            if not same_tok:
                raise RacError(f"{traces} was made with another tokenizer than {tokenizer}; "
                               "use --source offpolicy")
            if meta["weights_fingerprint"] != models.weights_fingerprint(models.resolve(tokenizer)):
                raise RacError(f"{traces} was generated by another model ({meta['model']}), so "
                               "it is not on-policy for this one; use --source offpolicy")
        if same_tok:
            seqs = from_traces(kept)
        else:
            source_tok = models.load_tokenizer(Path(traces) / "tokenizer")
            seqs = from_foreign_traces(kept, source_tok, tok,
                                       _foreign_instruction(meta, defaults, cfg.instruction), thinking)
    rows, info = build(seqs, cfg.budget_tokens, tok.pad_token_id, cfg.pack, cfg.allow_short)
    info = {"source": source, "tokenizer": models.model_name(tokenizer),
            "tokenizer_fingerprint": models.tokenizer_fingerprint(tok), "inputs": inputs, **info}
    return calibset.write(rows, info, out, overwrite), info
