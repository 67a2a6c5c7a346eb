"""What a pruning run reports: one row per pruned linear, and the totals over them."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch


def sparsity(W: torch.Tensor) -> float:
    """The fraction of exact zeros in ``W``."""
    return float((W == 0).float().mean())


@dataclass(frozen=True)
class LayerReport:
    layer: int
    name: str
    shape: list[int]
    sparsity: float  # fraction of exact zeros after pruning
    # ||(W - W_hat) X||^2 / ||W X||^2 of the solve (before any refinement); None without
    # statistics
    relative_error: float | None
    percdamp: float | None  # SparseGPT's dampening, None for the other methods
    seconds: float
    tokens: int  # calibration tokens in the statistics
    # --refine-epochs: the block's refinement loss per epoch (the same for each of its linears);
    # quantized: measured on the grids before the first epoch and after each (rac.prune.refine)
    block_refine_loss: list[float] | None = None

    @classmethod
    def of(cls, layer: int, name: str, W: torch.Tensor, err: float | None, damp: float | None,
           seconds: float, tokens: int) -> LayerReport:
        return cls(layer, name, list(W.shape), sparsity(W), err, damp, round(seconds, 4), tokens)


@dataclass(frozen=True)
class PruneTotals:
    linears: int
    weights_in_scope: int
    sparsity_in_scope: float
    mean_relative_error: float | None
    max_percdamp: float
    wall_s: float
    peak_rss_mb: float

    @classmethod
    def of(cls, layers: list[LayerReport], wall_s: float, peak_rss_mb: float) -> PruneTotals:
        sizes = [r.shape[0] * r.shape[1] for r in layers]
        errors = [r.relative_error for r in layers if r.relative_error is not None]
        return cls(
            linears=len(layers), weights_in_scope=sum(sizes),
            sparsity_in_scope=sum(r.sparsity * n for r, n in zip(layers, sizes)) / sum(sizes),
            mean_relative_error=sum(errors) / len(errors) if errors else None,
            max_percdamp=max((r.percdamp or 0) for r in layers), wall_s=round(wall_s, 2),
            peak_rss_mb=round(peak_rss_mb, 1))


@dataclass(frozen=True)
class PruneReport:
    """``prune_report.json``: the run's settings, its totals and one row per pruned linear."""

    model: str
    calib: str | None
    calib_info: dict | None
    method: str
    target: str
    scope: str
    true_sequential: bool
    fp8: bool  # weights on the FP8 grid (rac.prune.quant.SCHEME)
    blocksize: int  # the SparseGPT column block used (rounded up to a multiple of M for N:M)
    percdamp: float
    segment_weights: dict[str, float]
    dense_targets: bool
    refine_epochs: int
    refine_lr: float  # relative to each matrix's kept-weight RMS
    owl_lambda: float  # > 0: OWL layer sparsities
    error_span: float  # > 0: error-driven layer sparsities (grid step error_step)
    error_step: float
    mask_swaps: int  # magnitude / Wanda: prune-and-grow swaps per row
    device: str
    totals: PruneTotals
    layers: list[LayerReport]
    # rac quantize / --quantize: the scheme, bits, group size (None: per channel), sym, actorder,
    # and the compressed-tensors export's directory (None: not exported); None unquantized
    quantization: dict | None = None
    # where the data lived: streamed blocks, the activations kept in memory and spilled to disk
    memory: dict | None = None
    dtype: str = ""  # the weights' and forward passes' dtype ("" in reports before it was kept)

    def to_json(self) -> dict:
        return asdict(self)
