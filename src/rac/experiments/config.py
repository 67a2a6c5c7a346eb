"""The sweep config: one TOML file names the whole grid. Every field is validated with its name
in the message, so a typo fails before hours of work start.

See ``docs/sweep-example.toml`` for the documented example; ``rac.experiments.demo`` holds the
configs of ``rac demo`` and ``rac demo --full``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from rac.calibrate.calib import SOURCES
from rac.generate import Engine
from rac.io import RacError
from rac.prune.config import METHODS, QUANTIZER, RECIPES, QuantConfig, Scope
from rac.prune.masks import Target
from rac.sampling import Sampling, sampling_for
from rac.vllm_support import vllm_dtype

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class ProblemsSpec:
    """A problem file path, ``generate:TASK:SPLIT:N`` for a built-in task (seed 0), or
    ``humaneval`` / ``humaneval:N`` for HumanEval (``rac.tasks.generators.from_spec``)."""

    calib: str = "generate:arith:calib:2000"
    test: str = "generate:arith:test:500"


@dataclass(frozen=True)
class CalibrationSpec:
    sources: list[str] = field(default_factory=lambda: ["generic", "prompt", "rac"])
    budget_tokens: int = 40000
    fractions: list[float] = field(default_factory=lambda: [1.0])  # calibration-size sweep
    fraction_sparsities: list[float] = field(default_factory=list)  # fractions < 1 only here
    pack: int = 0
    offpolicy_model: str = ""  # the model whose traces make the 'offpolicy' source
    # sources calibrated with the first seed only: a costly off-policy model's traces, say
    first_seed_only: list[str] = field(default_factory=list)
    generic_text: list[str] = field(default_factory=list)  # empty: rac's built-in synthetic prose


@dataclass(frozen=True)
class TracesSpec:
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 512
    samples_per_prompt: int = 1
    batch_size: int = 128
    # true: top-k and the repetition penalty from the model's generation_config.json (else off);
    # false: from the two fields below (0 and 1: off)
    generation_config: bool = True
    top_k: int = 0
    repetition_penalty: float = 1.0
    only_correct: bool = False  # keep only traces whose answer is graded correct (RFC #2974's filter)


@dataclass(frozen=True)
class PruneSpec:
    methods: list[str] = field(default_factory=lambda: ["sparsegpt"])
    sparsities: list[float] = field(default_factory=lambda: [0.5])
    patterns: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=lambda: ["all"])
    fp8: list[bool] = field(default_factory=lambda: [False])
    true_sequential: bool = False
    recipe: str = "paper"  # or "best" (rac.prune.config.RECIPES)
    refine_epochs: int = -1  # -1: the recipe's; 0 or more: block refinement's epochs, over it
    # N:M patterns on the scopes below, with and without FP8 (the paper's Table 4)
    table4_scopes: list[str] = field(default_factory=list)
    # quantization targets, each calibrated on every source: "w4a16" (GPTQ), "2:4+w4a16" or
    # "0.5+w3a16" (SparseGPT pruning and quantizing in one pass); groups of quant_group_size
    quantize: list[str] = field(default_factory=list)
    quant_group_size: int = 128


def quant_target(text: str) -> tuple[Target, str]:
    """'w4a16' -> (no pruning, 'W4A16'); '2:4+w4a16' -> (2:4, 'W4A16'); the scheme is checked."""
    target, _, scheme = text.rpartition("+")
    scheme = scheme.upper()
    QuantConfig(scheme)  # refuses an unknown scheme and those that quantize activations
    return (Target.of(target) if target else Target()), scheme


def quant_method(target: Target) -> str:
    """GPTQ alone for a quantization target that prunes nothing, else SparseGPT pruning and
    quantizing in one pass."""
    return "sparsegpt" if target.fraction else QUANTIZER


@dataclass(frozen=True)
class EvalSpec:
    max_new_tokens: list[int] = field(default_factory=lambda: [512])  # the first is the main one
    budget_sparsities: list[float] = field(default_factory=list)  # the others only here (+dense)
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    batch_size: int = 128
    generation_config: bool = True  # as in TracesSpec (the dense model's file, for every eval)
    top_k: int = 0
    repetition_penalty: float = 1.0


SPEC_SAMPLING = ("generation_config", "top_k", "repetition_penalty")


def spec_sampling(model: str | Path, stage: str, spec: TracesSpec | EvalSpec, max_new: int) -> Sampling:
    """A stage's sampling from its spec ([traces] or [eval]): top-k and the repetition penalty
    from the model's generation_config.json, or the spec's with ``generation_config = false``."""
    follow = spec.generation_config
    return sampling_for(model, stage, spec.temperature, spec.top_p, max_new,
                        top_k=None if follow else spec.top_k,
                        repetition_penalty=None if follow else spec.repetition_penalty,
                        generation_config=follow)


def spec_key(spec: TracesSpec | EvalSpec, sampling: Sampling) -> dict:
    """A spec's fields in a cache key, with top-k, the penalty and the correctness filter as used
    and only when on: the stages cached before rac had them keep their keys."""
    return {**{k: v for k, v in asdict(spec).items()
               if k not in SPEC_SAMPLING and not (k == "only_correct" and not v)},
            **sampling.switched_on()}


@dataclass(frozen=True)
class ReconSpec:
    problems: int = 0  # 0: no Figure 2
    sparsity: float = 0.5
    pair: list[str] = field(default_factory=lambda: ["prompt", "rac"])
    max_new_tokens: int = 512


@dataclass(frozen=True)
class EngineSpec:
    """[engine]: how traces, evals and rollouts generate (``rac.generate.Engine``; 0: default)."""

    backend: str = "transformers"
    dtype: str = "auto"
    max_model_len: int = 0
    kv_cache_gb: float = 0.0
    gpu_memory: float = 0.9
    tensor_parallel: int = 1
    data_parallel: int = 1
    eager: bool = False

    def engine(self, threads: int) -> Engine:
        """The ``Engine`` (refusing vLLM settings on the transformers backend); the sweep's
        ``threads`` are vLLM's cores, or torch's threads (set by the sweep) for transformers."""
        return Engine(**{**asdict(self), "max_model_len": self.max_model_len or None,
                         "kv_cache_gb": self.kv_cache_gb or None},
                      threads=threads if self.backend == "vllm" else 0)

    def key(self) -> dict:
        """The engine in a cache key: nothing for the default (keys made before it still match),
        else every setting (vLLM in bf16 does not give fp32 transformers' tokens); the data
        parallel size only when it is not 1 (keys made before it existed still match), since a
        replica's share of a batch is another batch to a bf16 engine."""
        if self == EngineSpec():
            return {}
        settings = asdict(self)
        if self.data_parallel == 1:
            del settings["data_parallel"]
        if self.backend != "transformers":
            settings["dtype"] = vllm_dtype(self.dtype)  # what 'auto' is on this machine
        return {"engine": settings}


@dataclass(frozen=True)
class SweepConfig:
    model: str = "embedded"
    seeds: list[int] = field(default_factory=lambda: [0])
    threads: int = 0
    problems: ProblemsSpec = ProblemsSpec()
    calibration: CalibrationSpec = CalibrationSpec()
    traces: TracesSpec = TracesSpec()
    prune: PruneSpec = PruneSpec()
    eval: EvalSpec = EvalSpec()
    recon: ReconSpec = ReconSpec()
    engine: EngineSpec = EngineSpec()


def _check_type(name: str, value: object, expected: object) -> None:
    kind = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(str(expected))
    if kind is not None:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if not ok:
            raise RacError(f"config field '{name}' must be {expected}, got {value!r}")
        return
    inner = str(expected)[len("list["):-1] if str(expected).startswith("list[") else None
    if inner is not None:
        if not isinstance(value, list):
            raise RacError(f"config field '{name}' must be a list of {inner}, got {value!r}")
        for i, v in enumerate(value):
            _check_type(f"{name}[{i}]", v, inner)


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise RacError(f"config section '{prefix.rstrip('.')}' must be a table")
    known = {f.name: f for f in fields(cls)}
    for key in data:
        if key not in known:
            raise RacError(f"config field '{prefix}{key}' is unknown; known: {', '.join(known)}")
    kwargs = {}
    for key, value in data.items():
        f = known[key]
        if isinstance(f.default, (ProblemsSpec, CalibrationSpec, TracesSpec, PruneSpec, EvalSpec,
                                  ReconSpec, EngineSpec)):
            kwargs[key] = _build(type(f.default), value, f"{prefix}{key}.")
        else:
            _check_type(prefix + key, value, f.type)
            kwargs[key] = float(value) if f.type == "float" else value
    return cls(**kwargs)


def validate(cfg: SweepConfig) -> SweepConfig:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise RacError(f"config: {msg}")

    c, p, e = cfg.calibration, cfg.prune, cfg.eval
    need(bool(cfg.seeds), "'seeds' must name at least one seed")
    try:
        cfg.engine.engine(cfg.threads)
    except ValueError as err:
        raise RacError(f"config 'engine': {err}") from err
    need(bool(c.sources), "'calibration.sources' is empty")
    for s in c.sources:
        need(s in SOURCES, f"'calibration.sources' has unknown source {s!r}; use {', '.join(SOURCES)}")
    need(all(s in c.sources for s in c.first_seed_only),
         "'calibration.first_seed_only' names a source that is not in 'calibration.sources'")
    need("offpolicy" not in c.sources or bool(c.offpolicy_model),
         "source 'offpolicy' needs 'calibration.offpolicy_model'")
    need(c.budget_tokens >= 1, "'calibration.budget_tokens' must be >= 1")
    need(all(0 < f <= 1 for f in c.fractions) and bool(c.fractions),
         "'calibration.fractions' must be in (0, 1]")
    need(c.pack >= 0, "'calibration.pack' must be >= 0")
    for m in p.methods:
        need(m in METHODS, f"'prune.methods' has unknown method {m!r}; use {', '.join(METHODS)}")
    need(bool(p.sparsities or p.patterns or p.quantize),
         "'prune' needs 'sparsities', 'patterns' or 'quantize'")
    need(p.recipe in RECIPES, f"'prune.recipe' is unknown; use {', '.join(RECIPES)}")
    need(p.refine_epochs >= -1, "'prune.refine_epochs' must be -1 (the recipe's) or >= 0")
    need(all(0 <= s < 1 for s in p.sparsities), "'prune.sparsities' must be in [0, 1)")
    try:
        for pat in p.patterns:
            Target.parse(None, pat)
        for scope in p.scopes + p.table4_scopes:
            Scope.parse(scope)
        for q in p.quantize:
            quant_target(q)
        QuantConfig(group_size=p.quant_group_size)
    except ValueError as err:
        raise RacError(f"config 'prune': {err}") from err
    need(bool(e.max_new_tokens) and all(n >= 1 for n in e.max_new_tokens)
         and len(set(e.max_new_tokens)) == len(e.max_new_tokens),
         "'eval.max_new_tokens' must be a non-empty list of distinct positive integers")
    need(e.samples >= 1 and e.batch_size >= 1, "'eval.samples' and 'eval.batch_size' must be >= 1")
    need(e.temperature >= 0 and 0 < e.top_p <= 1, "'eval.temperature' >= 0, 0 < 'eval.top_p' <= 1")
    need(e.samples == 1 or e.temperature > 0,
         "'eval.samples' > 1 needs 'eval.temperature' > 0: greedy samples are all the same")
    need(len({str(Target(s)) for s in p.sparsities}) == len(p.sparsities),
         "'prune.sparsities' has values equal in their 6 significant digits (the cells' names)")
    t = cfg.traces
    need(t.temperature >= 0 and 0 < t.top_p <= 1 and t.max_new_tokens >= 1,
         "'traces' sampling settings are out of range")
    for name, spec in (("eval", e), ("traces", t)):
        need(spec.top_k >= 0 and spec.repetition_penalty > 0,
             f"'{name}.top_k' must be >= 0 (0: off), '{name}.repetition_penalty' > 0 (1: off)")
    need(cfg.recon.problems >= 0, "'recon.problems' must be >= 0")
    need(not cfg.recon.problems or (len(cfg.recon.pair) == 2
                                    and all(s in c.sources for s in cfg.recon.pair)),
         "'recon.pair' must name two of 'calibration.sources'")
    return cfg


def load(path: Path) -> SweepConfig:
    path = Path(path)
    if not path.is_file():
        raise RacError(f"config {path} does not exist or is not a file")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise RacError(f"{path}: not valid TOML ({e})") from e
    return validate(_build(SweepConfig, data, ""))


def from_dict(data: dict) -> SweepConfig:
    return validate(_build(SweepConfig, data, ""))
