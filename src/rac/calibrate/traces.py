"""The trace store: the dense model's own chains of thought, as the token ids it generated.

Layout of a store directory::

    meta.json               what made it (model, tokenizer fingerprint, sampling, seed, budget;
                            top-k and the repetition penalty only when they were on)
    shards/00000.parquet    one shard per generation batch, written atomically
    tokenizer/              a copy of the generating tokenizer (off-policy re-tokenization)
    done.json               written last: realized token counts

Generation runs in a fixed order of batches, each request seeded by its problem and sample
(``generate.request_seed``), so an interrupted run resumed with the same command skips the shards
it has and produces the very same store. The store
is readable with ``datasets.load_dataset("parquet", data_dir=DIR / "shards")``.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import closing
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from rac import models
from rac.generate import Backend, Engine, open_backend, request_seed
from rac.io import RacError, check_output_dir, write_json
from rac.models import prompt_ids
from rac.sampling import Sampling
from rac.tasks.grading import grade_problem
from rac.tasks.problems import Problem, answer_form, read_problems
from rac.vllm_support import top_p_identity

FORMAT = "rac-traces-1"


@dataclass(frozen=True)
class TracesConfig:
    """What to generate. ``instruction`` None: the model's instruction for the kind of problem.
    Generation stops once the kept traces hold ``budget_tokens`` (prompt + completion)."""

    sampling: Sampling
    seed: int = 0
    samples_per_prompt: int = 1
    budget_tokens: int = 1_000_000
    batch_size: int = 64
    only_correct: bool = False
    instruction: str | None = None
    thinking: bool | None = None  # None: detected (``models.thinks``)

    def __post_init__(self) -> None:
        for name in ("budget_tokens", "samples_per_prompt", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")


# how requests are seeded: a store made another way (one seed per batch, before) is not resumed
SEEDING = "per-request"


def store_identity(cfg: TracesConfig, *, model: str, weights_fingerprint: str,
                   tokenizer_fingerprint: str, problems_sha256: str, backend: str) -> dict:
    """A store's ``meta.json``: the request (instruction resolved) plus what it ran on. A rerun
    with the same identity resumes; another one is refused."""
    return {"format": FORMAT, "model": model, "weights_fingerprint": weights_fingerprint,
            "tokenizer_fingerprint": tokenizer_fingerprint, "problems_sha256": problems_sha256,
            "backend": backend, **asdict(cfg), "sampling": cfg.sampling.identity(),
            "seeding": SEEDING}


def _shard_path(out: Path, index: int) -> Path:
    return out / "shards" / f"{index:05d}.parquet"


def _open_store(out: Path, identity: dict, overwrite: bool) -> None:
    meta = out / "meta.json"
    if meta.exists():
        if json.loads(meta.read_text()) == identity:
            return  # resume
        if not overwrite:
            raise RacError(f"{out} holds traces of a different run (see its meta.json); "
                           "use another --out or pass --overwrite")
        shutil.rmtree(out / "shards", ignore_errors=True)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
        (out / "done.json").unlink(missing_ok=True)
    else:
        check_output_dir(out, overwrite)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    write_json(meta, identity)


def _tally(counts: tuple[int, int, int], shard: Path, only_correct: bool) -> tuple[int, int, int]:
    """``counts`` (traces, kept traces, kept tokens) plus those of one shard file."""
    rows = pq.read_table(shard).to_pylist()
    kept = [r for r in rows if r["correct"] or not only_correct]
    tokens = sum(len(r["prompt_ids"]) + len(r["completion_ids"]) for r in kept)
    return counts[0] + len(rows), counts[1] + len(kept), counts[2] + tokens


def _done(out: Path, counts: tuple[int, int, int], budget: int, **extra) -> dict:
    generated, kept, tokens = counts
    done = {"traces": generated, "kept": kept, "tokens": tokens, "budget_tokens": budget,
            "budget_reached": tokens >= budget,
            "shards": len(list((out / "shards").glob("*.parquet"))), **extra}
    write_json(out / "done.json", done)
    return done


def generate_traces(backend: Backend, tok: PreTrainedTokenizerBase, problems: list[Problem],
                    cfg: TracesConfig, instructions: dict[str, str], identity: dict, out: Path,
                    overwrite: bool = False, progress: bool = True,
                    shard: tuple[int, int] | None = None) -> dict:
    """Generate until the kept traces hold ``budget_tokens`` (prompt + completion) or the problems
    run out; returns the realized counts (also written to ``done.json``). ``instructions``: the
    text after a problem of each answer form (``models.instructions``); ``identity`` is what
    ``meta.json`` must hold (see ``store_identity``). ``shard`` (I, N): only the batches ``b``
    with ``b % N == I``, every one of them (no budget stop: only all shards together know where
    it falls; ``merge_traces`` cuts there)."""
    out = Path(out)
    _open_store(out, identity, overwrite)
    tok_dir = out / "tokenizer"
    if not tok_dir.exists():
        tmp = out / ".tokenizer.tmp"
        tok.save_pretrained(tmp)
        os.replace(tmp, tok_dir)
    thinking = bool(cfg.thinking)
    prompts = [prompt_ids(tok, p.problem, instructions[answer_form(p)], thinking) for p in problems]
    # Sample-major order: every problem once before any gets a second sample.
    requests = [(s, i) for s in range(cfg.samples_per_prompt) for i in range(len(problems))]
    batches = [requests[k:k + cfg.batch_size] for k in range(0, len(requests), cfg.batch_size)]
    counts = (0, 0, 0)
    bar = tqdm(total=cfg.budget_tokens, desc="traces", unit="tok", unit_scale=True, leave=False,
               disable=not progress)
    for b, batch in enumerate(batches):
        if shard is None and counts[2] >= cfg.budget_tokens:
            break
        if shard is not None and b % shard[1] != shard[0]:
            continue
        path = _shard_path(out, b)
        if not path.exists():
            completions = backend.generate(
                [prompts[i] for _, i in batch], cfg.sampling,
                [request_seed(cfg.seed, problems[i].id, s) for s, i in batch])
            rows = []
            for (s, i), c in zip(batch, completions):
                text = tok.decode(c.ids, skip_special_tokens=True)
                rows.append({
                    "problem_id": problems[i].id, "problem": problems[i].problem,
                    "answer": problems[i].answer, "sample": s, "prompt_ids": prompts[i],
                    "completion_ids": c.ids, "boundary": len(prompts[i]),
                    "finish_reason": c.finish_reason,
                    "correct": grade_problem(text, problems[i], thinking).correct,
                })
            tmp = path.with_suffix(".tmp")
            pq.write_table(pa.Table.from_pylist(rows), tmp)
            os.replace(tmp, path)
        before, counts = counts[2], _tally(counts, path, cfg.only_correct)
        bar.update(counts[2] - before)
    bar.close()
    return _done(out, counts, cfg.budget_tokens,
                 **({"shard": list(shard), "batches": len(batches)} if shard else {}))


def merge_traces(stores: list[Path], out: Path, overwrite: bool = False) -> dict:
    """One store from the finished shards of one run (``rac traces --shard I/N`` for every I):
    the batches in order until the budget, as the unsharded run would have stopped, so the
    result is that run's store. Refuses shards of different runs, a shard twice or missing."""
    metas, dones = [], []
    for s in map(Path, stores):
        done = json.loads((s / "done.json").read_text()) if (s / "done.json").exists() else {}
        if "shard" not in done:
            raise RacError(f"{s} is not a finished shard of a trace store ('rac traces --shard I/N')")
        metas.append(json.loads((s / "meta.json").read_text()))
        dones.append(done)
    identity = {k: v for k, v in metas[0].items() if k != "shard"}
    for s, m in zip(stores[1:], metas[1:]):
        differ = sorted(k for k in set(m) | set(identity) if k != "shard" and m.get(k) != identity.get(k))
        if differ:
            raise RacError(f"{s} and {stores[0]} are shards of different runs (they differ in "
                           f"{', '.join(differ)})")
    n = metas[0]["shard"][1]
    have = sorted(m["shard"][0] for m in metas)
    if have != list(range(n)) or any(m["shard"][1] != n for m in metas):
        raise RacError(f"the shards are {', '.join(f'{i}/{n}' for i in have)}: give each of "
                       f"0/{n} .. {n - 1}/{n} once")
    files = {int(f.stem): f for s in stores for f in (Path(s) / "shards").glob("*.parquet")}
    check_output_dir(out, overwrite)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "shards").mkdir(parents=True)
    counts = (0, 0, 0)
    for b in range(dones[0]["batches"]):
        if counts[2] >= identity["budget_tokens"]:
            break
        shutil.copyfile(files[b], _shard_path(tmp, b))
        counts = _tally(counts, files[b], identity["only_correct"])
    write_json(tmp / "meta.json", identity)
    shutil.copytree(Path(stores[0]) / "tokenizer", tmp / "tokenizer")
    done = _done(tmp, counts, identity["budget_tokens"])
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return done


@dataclass(frozen=True)
class Trace:
    problem_id: str
    problem: str
    answer: str
    prompt_ids: list[int]
    completion_ids: list[int]
    finish_reason: str
    correct: bool


def load_traces(store: Path) -> tuple[dict, list[Trace]]:
    """(meta, kept traces in generation order) of a finished store."""
    store = Path(store)
    if not (store / "meta.json").exists():
        raise RacError(f"{store} is not a trace store (no meta.json); make one with 'rac traces'")
    if not (store / "done.json").exists():
        raise RacError(f"{store} is unfinished; rerun the 'rac traces' command that made it")
    meta = json.loads((store / "meta.json").read_text())
    shards = sorted((store / "shards").glob("*.parquet"))
    fields = Trace.__dataclass_fields__
    traces = [Trace(**{k: r[k] for k in fields}) for s in shards for r in pq.read_table(s).to_pylist()]
    if meta["only_correct"]:
        traces = [t for t in traces if t.correct]
    return meta, traces


def tokens_for(store: Path, budget: int, model: str | Path, what: str, remedy: str) -> dict:
    """A finished store's counts (``done.json``), refused in one line when its kept traces hold
    fewer than ``budget`` tokens: the problems ran out, all the more when only correct ones count.
    Only a store in the vocabulary of ``model`` (the set's) is refused here: one in another is
    tokenized again by the calibration set, whose count it cannot know (the set refuses then). The
    tokenizer is loaded only for a store that falls short."""
    store = Path(store)
    n = json.loads((store / "done.json").read_text())
    if n["tokens"] < budget and json.loads((store / "meta.json").read_text())["tokenizer_fingerprint"] \
            == models.tokenizer_fingerprint(models.load_tokenizer(model)):
        raise RacError(f"{what} hold {n['tokens']} tokens, fewer than the {budget} needed: {n['kept']} "
                       f"of {n['traces']} traces kept; {remedy}")
    return n


def make_traces(model: str | Path, problems_file: Path, out: Path, cfg: TracesConfig,
                engine: Engine | None = None, *, overwrite: bool = False, progress: bool = True,
                shard: tuple[int, int] | None = None) -> dict:
    """``rac traces``: load the model, check the inputs, generate (resuming) into ``out``;
    ``shard`` (I, N): this run's share of a run split over N processes or machines."""
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise RacError(f"--shard {shard[0]}/{shard[1]}: need 0 <= I < N")
    engine = engine or Engine()
    problems = read_problems(problems_file)
    tok = models.load_tokenizer(model, engine.trust_remote_code)
    path = models.resolve(model)
    texts = models.instructions(models.defaults(model), problems, cfg.instruction)
    # one form: its text is the store's instruction, as it always was; a code store also records
    # each answer form's count and text (a code file mixes programs and functions)
    cfg = replace(cfg, instruction=next(iter(texts.values())) if len(texts) == 1 else None,
                  thinking=models.thinking_for(model, tok, cfg.thinking))
    resolved = engine.resolved(model)
    identity = store_identity(
        cfg, model=models.model_name(model), weights_fingerprint=models.weights_fingerprint(path),
        tokenizer_fingerprint=models.tokenizer_fingerprint(tok),
        problems_sha256=models.file_sha256(problems_file), backend=resolved.backend)
    if resolved.backend == "vllm":  # what else decides its tokens: a store made otherwise differs
        identity["vllm"] = {"dtype": resolved.dtype,
                            **top_p_identity(resolved.backend, cfg.sampling)}
    if problems[0].kind == "code":
        identity["forms"] = {f: sum(answer_form(p) == f for p in problems) for f in texts}
        identity["instructions"] = texts
    if shard is not None:
        identity["shard"] = list(shard)
    with closing(open_backend(model, tok, resolved)) as backend:
        return generate_traces(backend, tok, problems, cfg, texts, identity, out, overwrite,
                               progress, shard)
