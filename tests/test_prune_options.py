"""Pruning options that do not apply are refused, not silently dropped or recorded as applied; the
error-driven grid takes any target; refinement accumulates steps below the block dtype's
resolution in an fp32 master copy."""

from __future__ import annotations

import pytest
import torch

from rac.cli import main
from rac.prune.config import PruneConfig
from rac.prune.masks import Target


def test_segment_weights_are_validated_and_not_dropped_beside_balancing():
    with pytest.raises(ValueError, match="not both"):
        PruneConfig("sparsegpt", Target(0.5), segment_weights={"decode": 2.0},
                    balance_segments=True)
    with pytest.raises(ValueError, match="segment must be"):
        PruneConfig("sparsegpt", Target(0.5), segment_weights={"thought": 2.0})
    with pytest.raises(ValueError, match=">= 0"):
        PruneConfig("sparsegpt", Target(0.5), segment_weights={"decode": -1.0})
    assert PruneConfig("sparsegpt", Target(0.5), balance_segments=True).balance_segments


def test_options_that_need_a_calibration_set_are_named():
    assert PruneConfig("magnitude", Target(0.5)).needs_calibration == []
    cfg = PruneConfig("magnitude", Target(0.5), refine_epochs=2, owl_lambda=0.1,
                      segment_weights={"decode": 2.0})
    assert cfg.needs_calibration == ["--refine-epochs (or --recipe best)", "--owl-lambda",
                                     "--segment-weights"]
    assert PruneConfig("magnitude", Target(0.5), error_span=0.1).needs_calibration == \
        ["--error-span"]
    assert PruneConfig("wanda", Target(0.5)).needs_calibration == ["--method wanda"]


@pytest.mark.parametrize("flags,named", [
    (["--refine-epochs", "2"], "--refine-epochs"),
    (["--recipe", "best"], "--recipe best"),
    (["--owl-lambda", "0.1"], "--owl-lambda"),
    (["--error-span", "0.1"], "--error-span"),
    (["--segment-weights", "decode=2"], "--segment-weights"),
    (["--balance-segments"], "--balance-segments"),
])
def test_magnitude_without_calibration_refuses_what_it_would_ignore(qwen2_dir, tmp_path, capsys,
                                                                    flags, named):
    out = tmp_path / "m"
    code = main(["prune", str(qwen2_dir), "--method", "magnitude", "--sparsity", "0.5", *flags,
                 "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and named in err and "--calib" in err, err
    assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_segment_weights_beside_balancing_are_refused_on_the_command_line(qwen2_dir, tmp_path,
                                                                          capsys):
    code = main(["prune", str(qwen2_dir), "--method", "magnitude", "--sparsity", "0.5",
                 "--segment-weights", "decode=2", "--balance-segments", "--out",
                 str(tmp_path / "m")])
    err = capsys.readouterr().err
    assert code == 2 and "not both" in err and len(err.strip().splitlines()) == 1


def test_error_driven_grid_holds_a_target_of_any_digits():
    from rac.prune.allocation import error_sparsities, sparsity_grid

    grid = sparsity_grid(1 / 3, 0.05, 0.025)
    # block 0's error is flat, block 1's steep: one step of sparsity moves from block 1 to 0
    curves = [[1.0, 1.0, 1.0, 1.1, 2.0], [0.0, 0.5, 1.0, 2.0, 4.0]]
    assert error_sparsities(curves, grid, 1 / 3) == [0.3583333333, 0.3083333333]
    assert grid[2] == 1 / 3 and grid[0] == 0.2833333333 and grid[-1] == 0.3833333333


class _Linear(torch.nn.Module):
    """A decoder 'block' of one linear map, called as the engine calls blocks."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.proj = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False,
                                    dtype=weight.dtype)
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.proj(h),)


def _refined(dtype: torch.dtype, start: torch.Tensor, x: torch.Tensor, target: torch.Tensor,
             epochs: int) -> torch.Tensor:
    from rac.prune.refine import refine_block

    block = _Linear(start.to(dtype))
    refine_block(block, [block.proj], [(x.to(dtype), {})], [target], [torch.ones(x.shape[:-1])],
                 epochs=epochs, lr=1e-3, device="cpu")
    assert block.proj.weight.dtype == dtype
    return block.proj.weight.detach().float()


def test_refinement_on_a_grid_moves_whole_steps_and_keeps_the_best_epoch():
    """A 4-bit per-row grid, the target two steps above every weight: the refined weights are
    grid points that moved (zero codes too unless they are the pruning mask), and the block
    keeps the weights of the epoch that measured lowest."""
    from functools import partial

    from rac.prune.quant_grid import Grid
    from rac.prune.refine import refine_block

    torch.manual_seed(0)
    grid = Grid(4, None)
    w = torch.randn(4, 8)
    w[:, 0] = 0
    scale, zero = (t[:, None] for t in grid.fit(w, torch.float32))
    start = grid.round(w, scale, zero)
    x = torch.randn(1, 64, 8)
    target = x @ (start + 2 * scale).T
    for pruned in (False, True):
        block = _Linear(start)
        losses = refine_block(block, [block.proj], [(x, {})], [target], [torch.ones(64)],
                              epochs=30, lr=0.05, device="cpu",
                              rounding=[partial(grid.round, scale=scale, zero=zero)],
                              pruned=pruned)
        got = block.proj.weight.detach()
        assert torch.equal(grid.round(got, scale, zero), got)
        assert len(losses) == 31 and min(losses) < losses[0] / 2
        kept = float(((x @ got.T - target) ** 2).mean())
        assert kept == pytest.approx(min(losses), rel=1e-5)
        assert bool((got[:, 0] == 0).all()) == pruned
    # the target 0.3 steps above the start: the start is the nearest grid point, and a step
    # big enough to cross to the next one raises the loss; the block keeps the start
    block = _Linear(start)
    losses = refine_block(block, [block.proj], [(x, {})], [x @ (start + 0.3 * scale).T],
                          [torch.ones(64)], epochs=5, lr=1.0, device="cpu",
                          rounding=[partial(grid.round, scale=scale, zero=zero)], pruned=False)
    assert losses[0] == min(losses) and max(losses[1:]) > 2 * losses[0]
    assert torch.equal(block.proj.weight.detach(), start)


def test_bf16_refinement_accumulates_steps_below_bf16_resolution():
    """Weights in [1, 2) are 2^-7 apart in bf16; Adam's relative step of 1e-3 (about 0.0016 here)
    is below half of that, so each step alone rounds away. The fp32 master copy adds 40 of them
    up: the bf16 block ends where the fp32 block does, to bf16 rounding."""
    torch.manual_seed(0)
    start = 1 + torch.rand(4, 8)
    start[:, ::4] = 0  # pruned weights, which must stay zero
    start = start.to(torch.bfloat16).float()  # representable in both dtypes
    x = torch.randn(1, 16, 8)
    goal = start + 0.1 * (start != 0)
    target = x @ goal.T
    fp32 = _refined(torch.float32, start, x, target, epochs=40)
    bf16 = _refined(torch.bfloat16, start, x, target, epochs=40)
    moved = (fp32 - start).abs()
    kept = start != 0
    assert float(moved[kept].min()) > 0.03  # each weight moved by many steps' worth
    assert bool((bf16[~kept] == 0).all()) and bool((fp32[~kept] == 0).all())
    # within 2 bf16 ulps (2^-6 for [1, 2)) of the fp32 run; the forward runs in bf16, so the
    # gradients differ slightly, but the weights moved as far
    assert float((bf16 - fp32).abs().max()) <= 2 ** -6
    assert float((bf16 - start)[kept].abs().min()) > 0.03
