"""Calibration sets: generic text, prompt-only, RAC (prompt + on-policy CoT), off-policy CoT, and the
reference-solution control, all in one format and cut to the same token budget.

A calibration set is a ``datasets.Dataset`` saved to disk with ``input_ids``, ``attention_mask``
and a per-token ``segment`` label (0 prompt, 1 decode, 2 generic, -1 padding), plus
``calib_info.json``. llm-compressor's ``oneshot(dataset=...)`` takes the first two columns as they
are. Padding only appears with ``--pack`` and is always masked; pruning statistics use the mask.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
from transformers import PreTrainedTokenizerBase

from rac import models
from rac.calibrate.traces import Trace, load_traces
from rac.io import RacError, atomic_dir, write_json
from rac.models import prompt_ids
from rac.tasks.problems import Problem, read_problems

PROMPT, DECODE, GENERIC, PAD = 0, 1, 2, -1
SEGMENT_NAMES = {PROMPT: "prompt", DECODE: "decode", GENERIC: "generic", PAD: "pad"}
SOURCES = ("generic", "prompt", "rac", "offpolicy", "reference")


@dataclass(frozen=True)
class Sequence:
    ids: list[int]
    segment: list[int]


def from_documents(tok: PreTrainedTokenizerBase, documents: Iterable[str]) -> Iterator[Sequence]:
    """Generic text (the paper's C4), each document followed by EOS."""
    for doc in documents:
        ids = tok(doc)["input_ids"] + [tok.eos_token_id]
        yield Sequence(ids, [GENERIC] * len(ids))


def from_prompts(tok: PreTrainedTokenizerBase, problems: Iterable[Problem], instruction: str
                 ) -> Iterator[Sequence]:
    """Prompt-only: the problem rendered through the chat template, up to ``<think>\\n``."""
    for p in problems:
        ids = prompt_ids(tok, p.problem, instruction)
        yield Sequence(ids, [PROMPT] * len(ids))


def from_traces(traces: Iterable[Trace]) -> Iterator[Sequence]:
    """RAC: prompt ids followed by the completion ids exactly as the model generated them."""
    for t in traces:
        yield Sequence(t.prompt_ids + t.completion_ids,
                       [PROMPT] * len(t.prompt_ids) + [DECODE] * len(t.completion_ids))


def from_foreign_traces(traces: Iterable[Trace], source_tok: PreTrainedTokenizerBase,
                        tok: PreTrainedTokenizerBase, instruction: str) -> Iterator[Sequence]:
    """Off-policy with another tokenizer: the prompt is rendered by the target's chat template and
    the completion text re-tokenized (the only place where decode/re-encode is unavoidable)."""
    for t in traces:
        head = prompt_ids(tok, t.problem, instruction)
        text = source_tok.decode(t.completion_ids, skip_special_tokens=True)
        tail = tok(text, add_special_tokens=False)["input_ids"]
        if t.finish_reason == "stop":
            tail.append(tok.eos_token_id)
        yield Sequence(head + tail, [PROMPT] * len(head) + [DECODE] * len(tail))


def from_reference(tok: PreTrainedTokenizerBase, problems: Iterable[Problem], instruction: str
                   ) -> Iterator[Sequence]:
    """Control: prompt + the task's own reference solution as the chain of thought."""
    for p in problems:
        solution = p.extra.get("solution")
        if not solution:
            raise RacError(f"problem {p.id} has no 'solution'; --source reference needs them")
        head = prompt_ids(tok, p.problem, instruction)
        text = f"{solution}\n</think>\nThe answer is \\boxed{{{p.answer}}}."
        tail = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        yield Sequence(head + tail, [PROMPT] * len(head) + [DECODE] * len(tail))


def take_budget(seqs: Iterable[Sequence], budget: int) -> tuple[list[Sequence], int]:
    """Sequences in order until exactly ``budget`` tokens (the last one cut); returns the tokens
    actually available when there are fewer."""
    out, total = [], 0
    for s in seqs:
        if total >= budget:
            break
        keep = min(len(s.ids), budget - total)
        out.append(Sequence(s.ids[:keep], s.segment[:keep]))
        total += keep
    return out, total


def pack(seqs: list[Sequence], length: int, pad_id: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Concatenate into windows of ``length``; the last window is padded and masked."""
    ids = [t for s in seqs for t in s.ids]
    seg = [g for s in seqs for g in s.segment]
    rows = []
    for k in range(0, len(ids), length):
        w_ids, w_seg = ids[k:k + length], seg[k:k + length]
        pad = length - len(w_ids)
        rows.append((w_ids + [pad_id] * pad, [1] * len(w_ids) + [0] * pad, w_seg + [PAD] * pad))
    return rows


def build(seqs: Iterable[Sequence], budget: int, pad_id: int, pack_len: int = 0,
          allow_short: bool = False) -> tuple[datasets.Dataset, dict]:
    if budget < 1:
        raise RacError(f"--budget-tokens must be >= 1, got {budget}")
    chosen, total = take_budget(seqs, budget)
    if total < budget and not allow_short:
        raise RacError(f"only {total} tokens are available for a budget of {budget}; "
                       "give more input or pass --allow-short to continue with what there is")
    if total == 0:
        raise RacError("the calibration inputs hold no tokens")
    if pack_len:
        rows = pack(chosen, pack_len, pad_id)
    else:
        rows = [(s.ids, [1] * len(s.ids), s.segment) for s in chosen]
    ds = datasets.Dataset.from_dict({
        "input_ids": [r[0] for r in rows], "attention_mask": [r[1] for r in rows],
        "segment": [r[2] for r in rows]})
    counts = Counter(g for r in rows for g in r[2])
    info = {"tokens": total, "budget_tokens": budget, "sequences": len(chosen), "rows": len(rows),
            "pack": pack_len, "segment_tokens": {SEGMENT_NAMES[k]: counts.get(k, 0)
                                                 for k in (PROMPT, DECODE, GENERIC, PAD)}}
    return ds, info


def save(ds: datasets.Dataset, info: dict, out: Path, overwrite: bool) -> bool:
    """Write the set; returns False (and writes nothing) when ``out`` already holds this very set."""
    out = Path(out)
    old = out / "calib_info.json"
    if old.exists() and json.loads(old.read_text()) == info:
        return False
    if old.exists() and not overwrite:
        raise RacError(f"{out} holds a different calibration set; pass --overwrite or use another")
    with atomic_dir(out, overwrite=overwrite) as tmp:
        ds.save_to_disk(str(tmp / "data"))
        write_json(tmp / "calib_info.json", info)
    return True


def load(path: Path) -> tuple[datasets.Dataset, dict]:
    path = Path(path)
    if not (path / "calib_info.json").exists():
        raise RacError(f"{path} is not a calibration set (no calib_info.json); make one with "
                       "'rac calib'")
    info = json.loads((path / "calib_info.json").read_text())
    return datasets.load_from_disk(str(path / "data")), info


def inspect(path: Path, tok: PreTrainedTokenizerBase | None = None, bins: int = 10) -> str:
    ds, info = load(path)
    lengths = [sum(m) for m in ds["attention_mask"]]
    lines = [f"calibration set {path}: source {info.get('source')}, {info['tokens']} tokens "
             f"(budget {info['budget_tokens']}), {info['rows']} rows",
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
        ids, seg = ds[0]["input_ids"], ds[0]["segment"]
        parts, start = [], 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or seg[i] != seg[start]:
                parts.append(f"[{SEGMENT_NAMES[seg[start]]}]" + tok.decode(ids[start:i]))
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


def make_calib(source: str, tokenizer: str | Path, budget_tokens: int, out: Path, *,
               text: list[Path] | None = None, problems: Path | None = None,
               traces: Path | None = None, pack: int = 0, allow_short: bool = False,
               instruction: str | None = None, seed: int = 0, trust_remote_code: bool = False,
               overwrite: bool = False) -> tuple[bool, dict]:
    """``rac calib``: build one source's set; returns (written, info). Nothing is written when
    ``out`` already holds this very set."""
    if source not in SOURCES:
        raise RacError(f"unknown source {source!r}; use {', '.join(SOURCES)}")
    tok = models.load_tokenizer(tokenizer, trust_remote_code)
    if instruction is None:
        instruction = models.defaults(tokenizer).instruction
    inputs: dict = {}

    def need(flag: str, value):
        if not value:
            raise RacError(f"--source {source} needs --{flag}")
        inputs[flag] = str(value)
        return value

    if source == "generic":
        if text:
            docs = read_documents(text)
            inputs["text"] = [str(t) for t in text]
        elif str(tokenizer) == models.EMBEDDED:
            from rac.toy import generic

            docs = generic.corpus(20000, seed)
            inputs["text"] = f"built-in corpus, seed {seed}"
        else:
            raise RacError("--source generic needs --text FILE... (text, JSONL with 'text', or a "
                           "datasets directory); only the embedded model has a built-in corpus")
        random.Random(seed).shuffle(docs)
        seqs = from_documents(tok, docs)
    elif source in ("prompt", "reference"):
        probs = read_problems(need("problems", problems))
        seqs = (from_prompts if source == "prompt" else from_reference)(tok, probs, instruction)
    else:
        meta, kept = load_traces(need("traces", traces))
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
            seqs = from_foreign_traces(kept, source_tok, tok, instruction)
    ds, info = build(seqs, budget_tokens, tok.pad_token_id, pack, allow_short)
    info = {"source": source, "tokenizer": models.model_name(tokenizer),
            "tokenizer_fingerprint": models.tokenizer_fingerprint(tok), "inputs": inputs, **info}
    return save(ds, info, out, overwrite), info
