"""``rac search``: the largest sparsity (or the fewest weight bits) whose accuracy on a validation
split stays within a tolerance of the dense model's, by bisection, then one evaluation of the
chosen model on a separate test split (the number to report).

The search is over a list of compression levels: unstructured sparsities ``0, step, 2 step, ...,
max_sparsity``; for an N:M pattern the number of leading decoder blocks pruned with it (0 to
all); or quantization targets in the order given, least compressed first (``w8a16, w4a16,
w3a16, 2:4+w4a16``: GPTQ, or SparseGPT pruning and quantizing in one pass). Level 0 is the dense
model. Bisection assumes accuracy falls with the level; each level tried
is pruned and evaluated once and cached under ``OUT/levels/``, so a killed search resumes where it
stopped and a rerun with another tolerance reuses every evaluation. Each cached result is keyed by
what determines it: a pruned model by the model's and the calibration set's contents, its pruning
config and the batch size; an evaluation by that model, the problem file's contents and the
evaluation settings (``inputs.json`` beside each says which). A rerun into the same directory with
another file, set, method, recipe or sampling computes what it needs anew.

The validation and test files must not share a problem (by id, statement or skeleton,
``rac.tasks.overlap``): a search tuned on test problems would report a test accuracy it chose.

A level is *within* tolerance only if it is at the chosen confidence: with d the per-problem
paired drop (dense - pruned, same problems), mean(d) + z * SE(d) <= the allowed drop (``points``,
or ``(1 - keep) * dense accuracy``). The report also says how many problems would resolve each
verdict at the observed drop and spread.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rac import models
from rac.evaluate import EvalConfig, evaluate_model, instruction_key
from rac.experiments.config import quant_method, quant_target
from rac.experiments.sweep import key_of
from rac.io import RacError, atomic_write_text, save_figure, write_json
from rac.metrics import mean_se
from rac.prune.config import PruneConfig, QuantConfig, Scope
from rac.prune.masks import Target
from rac.prune.run import prune_to_dir
from rac.tasks import overlap
from rac.tasks.problems import read_problems


@dataclass(frozen=True)
class Tolerance:
    """At most ``points`` of accuracy lost (absolute), or at least ``keep`` of dense kept."""

    points: float | None = None
    keep: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if (self.points is None) == (self.keep is None):
            raise ValueError("give either a tolerance in points (--tolerance) or a fraction to "
                             "keep (--keep), not both")
        if self.points is not None and not 0 <= self.points < 1:
            raise ValueError(f"tolerance must be in [0, 1) accuracy points, got {self.points}")
        if self.keep is not None and not 0 < self.keep <= 1:
            raise ValueError(f"keep must be in (0, 1], got {self.keep}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence}")

    def allowed_drop(self, dense_accuracy: float) -> float:
        return self.points if self.points is not None else (1 - self.keep) * dense_accuracy


@dataclass(frozen=True)
class Verdict:
    within: bool
    drop: float  # mean paired drop, dense - pruned
    se: float
    allowed: float
    problems_needed: int | None  # to resolve "within" at this drop and spread; None: it cannot be


def judge(dense: list[float], pruned: list[float], tol: Tolerance) -> Verdict:
    """Whether ``pruned`` (per-problem accuracies) is within ``tol`` of ``dense`` (same problems)."""
    if len(dense) != len(pruned):
        raise ValueError("dense and pruned accuracies must be over the same problems")
    drops = [d - p for d, p in zip(dense, pruned)]
    drop, se = mean_se(drops)
    allowed = tol.allowed_drop(statistics.fmean(dense))
    z = statistics.NormalDist().inv_cdf(tol.confidence)
    needed = None
    if drop < allowed:
        sd = statistics.stdev(drops) if len(drops) > 1 else 0.0
        needed = max(1, math.ceil((z * sd / (allowed - drop)) ** 2))
    return Verdict(drop + z * se <= allowed, drop, se, allowed, needed)


def bisect(n_levels: int, within: Callable[[int], bool]) -> int:
    """The largest level in ``0..n_levels-1`` for which ``within`` holds, assuming it holds up to
    some level and fails beyond; level 0 is taken as within without asking."""
    lo, hi = 0, n_levels - 1
    if hi == 0 or within(hi):
        return hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if within(mid):
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class SearchConfig:
    """``prune``: method, scope and settings of every pruned model (its target is replaced per
    level); ``pattern`` None searches unstructured sparsity on a grid of ``step`` up to
    ``max_sparsity``, an N:M pattern the number of leading blocks pruned with it; ``quantize``
    (targets as in a sweep) searches those instead, each on ``quant``'s grids with its own
    scheme."""

    prune: PruneConfig
    tolerance: Tolerance
    eval: EvalConfig
    pattern: Target | None = None
    step: float = 0.02
    max_sparsity: float = 0.9
    batch_tokens: int = 8192
    quantize: tuple[str, ...] = ()
    quant: QuantConfig | None = None

    def __post_init__(self) -> None:
        if self.pattern is not None and not self.pattern.structured:
            raise ValueError("pattern must be N:M (or None for unstructured)")
        if self.quantize and self.pattern is not None:
            raise ValueError("search either quantization targets or an N:M pattern, not both "
                             "(a target such as 2:4+w4a16 prunes and quantizes)")
        for text in self.quantize:
            quant_target(text)  # an unknown scheme is refused before any work
        if not 0 < self.step <= self.max_sparsity < 1:
            raise ValueError("need 0 < step <= max sparsity < 1")


def levels_for(cfg: SearchConfig, n_blocks: int) -> list[PruneConfig | None]:
    """The pruning config of each level (None: dense)."""
    if cfg.quantize:
        return [None] + [replace(cfg.prune, method=quant_method(target), target=target,
                                 quant=replace(cfg.quant or QuantConfig(), scheme=scheme))
                         for target, scheme in map(quant_target, cfg.quantize)]
    if cfg.pattern is None:
        n = int(round(cfg.max_sparsity / cfg.step))
        return [None] + [replace(cfg.prune, target=Target(round(k * cfg.step, 6)))
                         for k in range(1, n + 1)]
    return [None] + [replace(cfg.prune, target=cfg.pattern,
                             scope=Scope(cfg.prune.scope.kind, f"0-{k - 1}"))
                     for k in range(1, n_blocks + 1)]


def _label(p: PruneConfig | None) -> str:
    if p is None:
        return "dense"
    if p.quant:
        return (f"{p.target}+" if p.target.fraction else "").replace(":", "-") + p.quant.scheme.lower()
    return f"{p.target}@{p.scope}".replace(":", "-").replace("@", "_")


def _bits(p: PruneConfig | None) -> int | None:
    """The bits of a level's kept weights (None: as the model stores them)."""
    return p.quant.bits if p is not None and p.quant else None


def _sparsity(p: PruneConfig | None, n_blocks: int) -> float:
    """The fraction of the searched linears' weights pruned at this level."""
    if p is None:
        return 0.0
    if p.target.structured:
        return p.target.fraction * len(p.scope.layer_indices(n_blocks)) / n_blocks
    return p.target.fraction


def check_disjoint(val: Path, test: Path) -> None:
    """Refuse a validation file that shares a problem with the test file."""
    overlap.refuse_shared(read_problems(val), read_problems(test),
                          f"validation file {val} and test file {test}", "validate on problems "
                          "disjoint from the test set, e.g. 'rac problems --split val'")


@dataclass(frozen=True)
class _Cache:
    """Where each level's pruned model and evaluations live, keyed by what determines them."""

    model: str | Path
    calib: Path
    cfg: SearchConfig
    out: Path
    model_key: str
    calib_key: str

    def level(self, p: PruneConfig | None) -> tuple[Path, Path]:
        """The directory of a level and the model evaluated there (pruned into it if need be)."""
        if p is None:
            return self.out / "levels" / f"dense-{self.model_key}", models.resolve(self.model)
        inputs = {"model": self.model_key, "calib": self.calib_key, "prune": asdict(p),
                  "batch_tokens": self.cfg.batch_tokens}
        d = self.out / "levels" / f"{_label(p)}-{key_of(inputs)}"
        if not (d / "inputs.json").exists():
            shutil.rmtree(d, ignore_errors=True)  # an unfinished level is redone
            prune_to_dir(self.model, self.calib, p, d / "model",
                         batch_tokens=self.cfg.batch_tokens, progress=False)
            write_json(d / "inputs.json", inputs)
        return d, d / "model"

    def evaluation(self, p: PruneConfig | None, problems: Path) -> dict:
        """``evaluate_model`` of a level on ``problems``, or what an earlier run left."""
        d, model = self.level(p)
        inputs = {"level": d.name, "problems": models.file_sha256(problems),
                  "eval": asdict(self.cfg.eval),
                  **instruction_key(model, problems, self.cfg.eval.instruction)}
        e = d / f"eval-{key_of(inputs)}"
        if not (e / "inputs.json").exists():
            evaluate_model(model, problems, e, self.cfg.eval, overwrite=True, progress=False)
            write_json(e / "inputs.json", inputs)
        return json.loads((e / "eval.json").read_text())


def search(model: str | Path, calib: Path, val: Path, test: Path, cfg: SearchConfig, out: Path,
           show: Callable[[str], None] | None = None) -> dict:
    """Run (or resume) the search; writes ``OUT/search.json``, ``search.md``, ``search.png`` and
    the chosen model at ``OUT/model`` (its test evaluation is cached with its level)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RacError(f"{out} is a file; give a directory for the search")
    check_disjoint(val, test)
    n_blocks = json.loads((models.resolve(model) / "config.json").read_text())["num_hidden_layers"]
    levels = levels_for(cfg, n_blocks)
    cache = _Cache(model, Path(calib), cfg, out, models.fingerprint(models.resolve(model)),
                   models.fingerprint(Path(calib)))
    say = show or (lambda _line: None)

    def accuracies(k: int) -> list[float]:
        return [r["pass1"] for r in cache.evaluation(levels[k], val)["problems"]]

    dense = accuracies(0)
    tried: dict[int, tuple[float, Verdict]] = {}  # level -> (validation accuracy, verdict)

    def within(k: int) -> bool:
        pruned = accuracies(k)
        v = judge(dense, pruned, cfg.tolerance)
        tried[k] = (statistics.fmean(pruned), v)
        say(f"level {_label(levels[k])}: sparsity {_sparsity(levels[k], n_blocks):.3f}, drop "
            f"{v.drop:+.3f} +- {v.se:.3f} (allowed {v.allowed:.3f}): "
            + ("within" if v.within else "not within"))
        return v.within

    chosen = bisect(len(levels), within)
    best = levels[chosen]
    model_out = out / "model"
    if model_out.exists():
        shutil.rmtree(model_out)
    shutil.copytree(cache.level(best)[1], model_out)
    test_eval, dense_test = cache.evaluation(best, test), cache.evaluation(None, test)
    points = [{"index": k, "level": _label(levels[k]), "sparsity": _sparsity(levels[k], n_blocks),
               "weight_bits": _bits(levels[k]), "accuracy": accuracy, "verdict": asdict(v)}
              for k, (accuracy, v) in sorted(tried.items())]
    result = {
        "model": models.model_name(model), "calib": str(calib), "validation": str(val),
        "test": str(test), "model_fingerprint": cache.model_key,
        "calib_fingerprint": cache.calib_key, "validation_sha256": models.file_sha256(val),
        "test_sha256": models.file_sha256(test), "method": cfg.prune.method,
        "pattern": str(cfg.pattern) if cfg.pattern else "unstructured",
        "quantize": list(cfg.quantize),
        "quant": asdict(cfg.quant) if cfg.quantize and cfg.quant else None,
        "tolerance": asdict(cfg.tolerance), "step": cfg.step,
        "dense_validation_accuracy": statistics.fmean(dense), "points": points,
        "chosen": {"level": _label(best), "sparsity": _sparsity(best, n_blocks),
                   "weight_bits": _bits(best), "index": chosen},
        "test_accuracy": test_eval["summary"]["accuracy"],
        "test_accuracy_se": test_eval["summary"]["accuracy_se"],
        "dense_test_accuracy": dense_test["summary"]["accuracy"],
        "test_problems": test_eval["summary"]["n_problems"],
    }
    _plot(result, out / "search.png")
    write_json(out / "search.json", result)
    atomic_write_text(out / "search.md", _markdown(result))
    return result


def _plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = sorted(result["points"], key=lambda p: p["index"])
    # quantization targets are in the order given, on an axis of their own
    x = "index" if result["quantize"] else "sparsity"
    fig, ax = plt.subplots(figsize=(7, 4.2))
    ax.errorbar([p[x] for p in pts], [p["accuracy"] for p in pts],
                yerr=[p["verdict"]["se"] for p in pts], fmt="o", capsize=3, label="levels tried")
    for p in pts:
        ax.annotate("ok" if p["verdict"]["within"] else "x", (p[x], p["accuracy"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    dense = result["dense_validation_accuracy"]
    allowed = pts[0]["verdict"]["allowed"] if pts else 0.0
    ax.axhline(dense, color="gray", linestyle=":", label="dense (validation)")
    ax.axhline(dense - allowed, color="red", linestyle="--", label="dense - tolerance")
    ax.axvline(result["chosen"][x], color="green", label="chosen")
    ax.plot([result["chosen"][x]], [result["test_accuracy"]], "s", color="green",
            label="chosen, test split")
    if result["quantize"]:
        ax.set_xticks(range(len(result["quantize"]) + 1), ["dense", *result["quantize"]])
        ax.set_xlabel("quantization target")
    else:
        ax.set_xlabel("sparsity of the searched linears")
    ax.set_ylabel("accuracy")
    ax.set_title(f"rac search: {_searched(result)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def _searched(result: dict) -> str:
    if result["quantize"]:
        return f"quantization targets {', '.join(result['quantize'])}"
    return f"{result['method']}, {result['pattern']}"


def _markdown(result: dict) -> str:
    tol = result["tolerance"]
    rule = (f"at most {tol['points']:.3f} points below dense" if tol["points"] is not None
            else f"at least {tol['keep']:.3f} of dense")
    lines = [f"# rac search: {_searched(result)}", "",
             f"Largest level whose validation accuracy is {rule} at {tol['confidence']:.0%} "
             f"confidence (paired over problems); dense validation accuracy "
             f"{result['dense_validation_accuracy']:.3f}.", "",
             "| level | sparsity | weight bits | accuracy | drop +- SE | allowed | verdict | "
             "problems needed |", "|---|---|---|---|---|---|---|---|"]
    for p in sorted(result["points"], key=lambda p: p["index"]):
        v = p["verdict"]
        lines.append(f"| {p['level']} | {p['sparsity']:.3f} | {p['weight_bits'] or '-'} | "
                     f"{p['accuracy']:.3f} | "
                     f"{v['drop']:+.3f} +- {v['se']:.3f} | {v['allowed']:.3f} | "
                     f"{'within' if v['within'] else 'not within'} | "
                     f"{v['problems_needed'] if v['problems_needed'] else '-'} |")
    lines += ["", f"Chosen: {result['chosen']['level']} (sparsity {result['chosen']['sparsity']:.3f})."
              f" On the test split ({result['test_problems']} problems): "
              f"**{result['test_accuracy']:.3f} +- {result['test_accuracy_se']:.3f}** "
              f"(dense {result['dense_test_accuracy']:.3f}).", "", "![search](search.png)", ""]
    return "\n".join(lines)
