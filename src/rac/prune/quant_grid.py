"""Integer quantization grids: pure tensor functions shared by GPTQ, joint SparseGPT and the export.

A row's weights (or each group of ``group_size`` consecutive input columns of a row) get one
``scale`` and one integer ``zero``; a weight w is stored as the signed code

    q = clamp(round(w / scale) + zero, q_min, q_max),   q_min = -2^(bits-1), q_max = 2^(bits-1) - 1

and read back as (q - zero) * scale: compressed-tensors' convention, so the codes and parameters
rac evaluates are the ones the export stores. The fit is min-max over the weights given, with 0
always inside the range, so a pruned weight (zero) stays exactly zero on every grid:

- symmetric: zero = 0, scale = max |w| / ((q_max - q_min) / 2), i.e. max |w| / (q_max + 1/2), as
  compressed-tensors and the GPTQ reference fit it: all 2^bits codes are used, and a group's
  largest positive weight, at q_max + 1/2 steps, is clipped by half a step. The alternative,
  max |w| / q_max, clips nothing but leaves code q_min unused: on the 0.5B's shapes at 4 bits its
  layer error was 1.145x compressed-tensors' (bench/gptq_parity.py, bench/README.md);
- asymmetric: scale = (max(w, 0) - min(w, 0)) / (2^bits - 1), zero = q_min - round(min / scale).

Scales are rounded to the layer's dtype before any code is computed: the export stores them in
that dtype, and dequantizing there gives exactly the weights evaluated.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Grid:
    """``bits`` per weight, one scale per ``group_size`` input columns of a row (None: one per
    row, "per channel"), symmetric or with a zero point."""

    bits: int
    group_size: int | None = 128
    sym: bool = True

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 8:
            raise ValueError(f"{self.bits}-bit weights are not supported; use 2 to 8 bits")
        if self.group_size is not None and self.group_size < 1:
            raise ValueError(f"group size must be >= 1 (or per channel), got {self.group_size}")

    @property
    def q_min(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def q_max(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def groups(self, columns: int) -> int:
        """How many groups a row of ``columns`` inputs has (1 per channel)."""
        if self.group_size is None:
            return 1
        if columns % self.group_size:
            raise ValueError(f"groups of {self.group_size} columns do not divide {columns} inputs; "
                             "choose a --group-size that divides every layer's input width")
        return columns // self.group_size

    def group_of_columns(self, columns: int) -> torch.Tensor:
        """The group index of each input column (all 0 per channel)."""
        size = columns if self.group_size is None else self.group_size
        self.groups(columns)
        return torch.arange(columns) // size

    def fit(self, W: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Min-max (scale, zero) of each row of ``W`` (all its columns are one group): scale in
        fp32 holding a value of ``dtype``, zero as integers in fp32; shapes (rows,)."""
        W = W.float()
        lo = W.amin(dim=1).clamp(max=0)
        hi = W.amax(dim=1).clamp(min=0)
        levels = 2 ** self.bits - 1
        scale = torch.maximum(-lo, hi) / (levels / 2) if self.sym else (hi - lo) / levels
        # an all-zero row: any scale codes it as zero; 1 keeps the division finite
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        scale = scale.to(dtype).float().clamp(min=torch.finfo(dtype).tiny)
        if self.sym:
            zero = torch.zeros_like(scale)
        else:
            zero = (self.q_min - torch.round(lo / scale)).clamp(self.q_min, self.q_max)
        return scale, zero

    def codes(self, W: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """The integer codes of ``W`` (in fp32), ``scale`` and ``zero`` broadcasting against it."""
        return (torch.round(W.float() / scale) + zero).clamp(self.q_min, self.q_max)

    @staticmethod
    def dequantize(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        return (codes - zero) * scale

    def round(self, W: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """``W`` rounded to its nearest grid point (fp32)."""
        return self.dequantize(self.codes(W, scale, zero), scale, zero)


@dataclass(frozen=True)
class GridParams:
    """The grid a layer was quantized on: ``scale`` (in the layer's dtype) and integer ``zero``
    (int8), both (rows, groups); column j of a row uses group ``grid.group_of_columns(...)[j]``."""

    scale: torch.Tensor
    zero: torch.Tensor

    def per_column(self, grid: Grid) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero) in fp32, broadcasting against the layer's weight."""
        scale, zero = self.scale.float(), self.zero.float()
        if grid.group_size is None:  # (rows, 1)
            return scale, zero
        return scale.repeat_interleave(grid.group_size, 1), zero.repeat_interleave(grid.group_size, 1)

    def rounding(self, grid: Grid, device: torch.device | str
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The map of a weight on ``device`` onto this grid (fp32), in a (rows, groups, columns
        per group) view, so that no scale is expanded to the weight's shape; the scales are
        converted once, not at every call."""
        rows, groups = self.scale.shape
        scale = self.scale.float().to(device)[..., None]
        zero = self.zero.float().to(device)[..., None]
        return lambda W: grid.round(W.reshape(rows, groups, -1), scale, zero).reshape(W.shape)

    def codes(self, grid: Grid, W: torch.Tensor) -> torch.Tensor:
        """The integer codes (in fp32) of a weight quantized on this grid. Computed in fp32, they
        give a 16-bit weight back even where rounding it to its dtype moved it by more than
        half a step (8-bit codes far from zero in bf16): the nearest code's product is at least
        as close to the weight as the code it was made from."""
        return grid.codes(W, *self.per_column(grid))


def fit_groups(W: torch.Tensor, grid: Grid, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, zero), each (rows, groups) in fp32, of every group of ``W`` at once."""
    rows, columns = W.shape
    n = grid.groups(columns)
    scale, zero = grid.fit(W.reshape(rows * n, columns // n), dtype)
    return scale.reshape(rows, n), zero.reshape(rows, n)


def rtn(W: torch.Tensor, grid: Grid) -> tuple[torch.Tensor, GridParams]:
    """Round-to-nearest: every weight to the nearest point of its group's min-max grid (no
    calibration, no error compensation). Returns the dequantized weight in W's dtype and its grid."""
    scale, zero = fit_groups(W, grid, W.dtype)
    params = GridParams(scale.to(W.dtype), zero.to(torch.int8))
    return grid.round(W, *params.per_column(grid)).to(W.dtype), params
