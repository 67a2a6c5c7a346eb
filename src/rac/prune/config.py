"""What to prune and how: the pruning method, the sparsity target, the layer scope and the
method's settings, each validated where it is defined."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from rac.calibset import check_segment_weights
from rac.prune.masks import Target
from rac.prune.quant_grid import Grid
from rac.prune.sparsegpt import SparseGPTConfig
from rac.prune.wanda import WandaConfig

METHODS = ("magnitude", "wanda", "sparsegpt")
QUANTIZER = "gptq"  # rac quantize: SparseGPT's loop with nothing pruned (rac.prune.gptq)
# weight-only schemes: the bits of the weights; activations stay in the model's dtype
WEIGHT_ONLY = {"W4A16": 4, "W3A16": 3, "W8A16": 8}
# schemes that also quantize activations: the bits of the weights, which have one symmetric scale
# per output channel, and int8 activations quantized per token at run time (dynamic, symmetric),
# as compressed-tensors and vLLM define W8A8; the saved model is a compressed-tensors checkpoint,
# whose activations transformers quantizes as it runs (compressed-tensors' forward)
WITH_ACTIVATIONS = {"W8A8": 8}
SCHEMES = {**WEIGHT_ONLY, **WITH_ACTIVATIONS}
ATTN = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
# The order in which a Llama/Qwen2 block uses its linears: what true-sequential follows. The
# linears of a group read the same input (q/k/v the normed hidden states, gate/up the normed
# residual), so one set of statistics serves the whole group.
SEQUENTIAL_GROUPS = (ATTN[:3], ATTN[3:], MLP[:2], MLP[2:])
LAYER_SETS = ("all", "first-third", "first-last-third")
# One switch for the options beyond the paper: "paper" is the method as published (the default),
# "best" the combination measured best on the embedded model (docs/findings.md). Explicit options
# given beside a recipe win over it.
RECIPES: dict[str, dict] = {"paper": {}, "best": {"refine_epochs": 20}}


@dataclass(frozen=True)
class Scope:
    """Which linears to prune: a kind (all, attn, mlp) at a set of layers.

    Written ``KIND[@LAYERS]`` where LAYERS is ``all``, ``first-third``, ``first-last-third`` (the
    paper's Table 4 scopes) or an index list such as ``0-3,7``."""

    kind: str = "all"
    layers: str = "all"

    def __post_init__(self) -> None:
        if self.kind not in ("all", "attn", "mlp"):
            raise ValueError(f"scope kind {self.kind!r} unknown; use all, attn or mlp")
        if self.layers not in LAYER_SETS and not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*",
                                                              self.layers):
            raise ValueError(f"scope layers {self.layers!r} unknown; use {', '.join(LAYER_SETS)} "
                             "or an index list such as 0-3,7")

    @classmethod
    def parse(cls, text: str) -> Scope:
        kind, _, layers = text.partition("@")
        return cls(kind or "all", layers or "all")

    def layer_indices(self, n_layers: int) -> list[int]:
        third = n_layers // 3
        if self.layers == "all":
            chosen = set(range(n_layers))
        elif self.layers == "first-third":
            chosen = set(range(third))
        elif self.layers == "first-last-third":
            chosen = set(range(third)) | set(range(n_layers - third, n_layers))
        else:
            chosen = set()
            for part in self.layers.split(","):  # validated in __post_init__
                lo, _, hi = part.partition("-")
                chosen.update(range(int(lo), int(hi or lo) + 1))
            bad = sorted(i for i in chosen if not 0 <= i < n_layers)
            if bad:
                raise ValueError(f"layers {bad} do not exist: the model has {n_layers} (0-{n_layers - 1})")
        return sorted(chosen)

    def names(self) -> tuple[str, ...]:
        return {"all": ATTN + MLP, "attn": ATTN, "mlp": MLP}[self.kind]

    def __str__(self) -> str:
        return f"{self.kind}@{self.layers}"


@dataclass(frozen=True)
class QuantConfig:
    """A weight quantization: the scheme, one grid per ``group_size`` inputs of a row (None: per
    output channel), symmetric or with zero points, and GPTQ's activation order."""

    scheme: str = "W4A16"
    group_size: int | None = 128
    sym: bool = True
    actorder: bool = False

    def __post_init__(self) -> None:
        if self.scheme == "W4A8":
            raise ValueError("W4A8 (int4 weights, int8 activations) is not supported: use W8A8, "
                             "or W4A16 for 4-bit weights")
        if self.scheme not in SCHEMES:
            raise ValueError(f"scheme {self.scheme!r} unknown; use {', '.join(SCHEMES)}")
        if self.activation_bits and (self.group_size is not None or not self.sym):
            raise ValueError(f"{self.scheme} weights have one symmetric scale per output channel "
                             "(what its int8 kernels take): use --group-size channel and --sym")
        Grid(self.bits, self.group_size, self.sym)  # validates the group size

    @property
    def bits(self) -> int:
        return SCHEMES[self.scheme]

    @property
    def activation_bits(self) -> int | None:
        """8 for a scheme whose activations are quantized per token at run time, else None."""
        return 8 if self.scheme in WITH_ACTIVATIONS else None

    @property
    def grid(self) -> Grid:
        return Grid(self.bits, self.group_size, self.sym)


@dataclass(frozen=True)
class PruneConfig:
    """One pruning run. ``true_sequential`` also propagates inside each block; ``staged`` runs it
    as one staged pass per block (Llama/Qwen2 blocks; others fall back to one pass per sublayer
    group, as does ``staged=False``). ``segment_weights`` reweights calibration tokens by segment
    name, e.g. ``{"decode": 2.0}`` (an extension beyond the paper). ``quant`` quantizes what
    SparseGPT keeps in the same pass (joint mode), or, with the method ``gptq`` and no sparsity,
    quantizes without pruning."""

    method: str
    target: Target
    scope: Scope = Scope()
    true_sequential: bool = False
    staged: bool = True
    sparsegpt: SparseGPTConfig = SparseGPTConfig()
    wanda: WandaConfig = WandaConfig()
    segment_weights: dict[str, float] = field(default_factory=dict)
    balance_segments: bool = False  # weigh segments to equal shares (calibset.balanced_weights)
    dense_targets: bool = False  # SparseGPT: fit the dense model's outputs (rac.prune.asymmetric)
    refine_epochs: int = 0  # then Adam on each block's kept weights (rac.prune.refine)
    refine_lr: float = 0.01  # Adam's step, relative to each matrix's kept-weight RMS
    owl_lambda: float = 0.0  # > 0: OWL layer sparsities within target +- lambda (rac.prune.allocation)
    owl_m: float = 5.0  # a score is an outlier above m times its block's mean
    # > 0: per-block sparsities within target +- this span, on a grid of error_step, chosen from
    # each block's reconstruction error curve (rac.prune.allocation.error_sparsities)
    error_span: float = 0.0
    error_step: float = 0.025
    # magnitude / Wanda: then up to this many prune-and-grow swaps per row that lower the layer's
    # reconstruction error (rac.prune.swaps; weights keep their dense values)
    mask_swaps: int = 0
    quant: QuantConfig | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.method not in (*METHODS, QUANTIZER):
            raise ValueError(f"method {self.method!r} unknown; use {', '.join(METHODS)}")
        self._check_quantization()
        if self.dense_targets and (self.method not in ("sparsegpt", QUANTIZER)
                                   or self.true_sequential):
            raise ValueError("dense targets are implemented for SparseGPT without true-sequential")
        if self.refine_epochs < 0 or not self.refine_lr > 0:
            raise ValueError("refine epochs must be >= 0 and the refine learning rate > 0")
        if self.refine_epochs and self.true_sequential:
            raise ValueError("block refinement is implemented without true-sequential")
        if self.owl_lambda and (self.target.structured or not 0 < self.owl_lambda < 1):
            raise ValueError("OWL needs an unstructured target and 0 < lambda < 1")
        if self.error_span and (self.target.structured or self.owl_lambda
                                or not 0 < self.error_step <= self.error_span < 1):
            raise ValueError("error-driven allocation needs an unstructured target, no OWL, and "
                             "0 < step <= span < 1")
        if self.mask_swaps and (self.method in ("sparsegpt", QUANTIZER) or self.mask_swaps < 0):
            raise ValueError("mask swaps refine magnitude or Wanda masks; SparseGPT and GPTQ also "
                             "update the weights they keep")
        check_segment_weights(self.segment_weights)
        if self.balance_segments and self.segment_weights:
            raise ValueError("give segment weights or balance the segments, not both")

    def _check_quantization(self) -> None:
        """Quantization is refused wherever it would not be what is evaluated."""
        if self.method == QUANTIZER:
            if self.quant is None or self.target.fraction:
                raise ValueError("gptq quantizes without pruning: give a quantization and no "
                                 "sparsity (rac prune --quantize prunes and quantizes)")
            if self.owl_lambda or self.error_span:
                raise ValueError("OWL and error-driven allocation share out sparsity; gptq "
                                 "prunes nothing")
        if self.quant is None:
            return
        if self.method not in ("sparsegpt", QUANTIZER):
            raise ValueError(f"--quantize needs --method sparsegpt (pruned and quantized in one "
                             f"pass); {self.method} does not update the weights it keeps")
        if self.refine_epochs and self.quant.activation_bits:
            raise ValueError(f"--refine-epochs (or --recipe best) with {self.quant.scheme}: the "
                             "refinement does not simulate the int8 activations; refine a "
                             "weight-only scheme")
        if self.quant.actorder and self.target.structured:
            raise ValueError("--actorder processes the columns out of order, which would split "
                             "N:M groups; drop it, or prune unstructured")
        if self.method == "sparsegpt" and str(self.scope) != "all@all":
            raise ValueError(f"--quantize quantizes the linears it prunes: with --scope "
                             f"{self.scope} the others would stay unquantized; use --scope all")

    @classmethod
    def with_recipe(cls, recipe: str, **options) -> PruneConfig:
        """A config from a recipe's settings, overridden by ``options`` (None: not given)."""
        if recipe not in RECIPES:
            raise ValueError(f"recipe {recipe!r} unknown; use {', '.join(RECIPES)}")
        return cls(**{**RECIPES[recipe], **{k: v for k, v in options.items() if v is not None}})

    @property
    def needs_dense_states(self) -> bool:
        """Whether the engine carries the dense model's hidden states beside the pruned ones."""
        return self.dense_targets or self.refine_epochs > 0

    @property
    def needs_calibration(self) -> list[str]:
        """The options of this config that only a calibration set gives a meaning to (as the
        command line spells them); empty for plain magnitude pruning."""
        options = {f"--method {self.method}": self.method != "magnitude",
                   "--mask-swaps": self.mask_swaps > 0,
                   "--refine-epochs (or --recipe best)": self.refine_epochs > 0,
                   "--owl-lambda": self.owl_lambda > 0, "--error-span": self.error_span > 0,
                   "--segment-weights": bool(self.segment_weights),
                   "--balance-segments": self.balance_segments}
        return [name for name, given in options.items() if given]
