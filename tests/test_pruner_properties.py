"""Property-based tests of the pruners' invariants (hypothesis)."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rac.prune.magnitude import magnitude
from rac.prune.masks import Target
from rac.prune.sparsegpt import SparseGPTConfig, sparsegpt
from rac.prune.wanda import wanda

shapes = st.tuples(st.integers(1, 6), st.sampled_from([4, 8, 12, 16]))
targets = st.one_of(st.floats(0.0, 0.9).map(lambda s: Target(round(s, 2))),
                    st.sampled_from([Target(n=2, m=4), Target(n=1, m=4), Target(n=3, m=4)]))


def layer(seed: int, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(rows, cols, generator=g)
    X = torch.randn(4 * cols, cols, generator=g) * torch.exp(torch.randn(cols, generator=g))
    H = X.T @ X
    return W, H, H.diagonal().sqrt()


def prune_all(W, H, norm, target):
    return {"magnitude": magnitude(W, target), "wanda": wanda(W, norm, target),
            "sparsegpt": sparsegpt(W, H, target, SparseGPTConfig(blocksize=8))[0]}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), shape=shapes, target=targets)
def test_sparsity_nm_validity_and_untouched_entries(seed, shape, target):
    W, H, norm = layer(seed, *shape)
    rows, cols = shape
    for name, P in prune_all(W, H, norm, target).items():
        zeros = P == 0
        if target.structured:
            # every group of M holds at least N zeros (exactly N when no weight was already 0)
            assert torch.all(zeros.reshape(rows, cols // target.m, target.m).sum(-1) >= target.n)
        elif name == "wanda":
            assert torch.all(zeros.sum(1) >= int(cols * target.sparsity))
        elif name == "magnitude":
            assert int(zeros.sum()) >= int(W.numel() * target.sparsity)
        else:  # sparsegpt: exact per block of columns
            for b in range(0, cols, 8):
                block = zeros[:, b:b + 8]
                assert int(block.sum()) >= int(block.numel() * target.sparsity)
        if name != "sparsegpt":
            # mask-only methods never change a kept weight
            assert torch.equal(P[~zeros], W[~zeros])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), shape=shapes, target=targets)
def test_pruning_a_pruned_layer_again_changes_nothing(seed, shape, target):
    W, H, norm = layer(seed, *shape)
    once = prune_all(W, H, norm, target)
    assert torch.equal(magnitude(once["magnitude"], target), once["magnitude"])
    assert torch.equal(wanda(once["wanda"], norm, target), once["wanda"])
    # SparseGPT: the zeros have the smallest scores (0) of their block or group, so the mask is
    # kept; with no error to spread, the kept weights stay put (fp32 rounding aside)
    again = sparsegpt(once["sparsegpt"], H, target, SparseGPTConfig(blocksize=8))[0]
    assert torch.equal(again == 0, once["sparsegpt"] == 0)
    assert torch.allclose(again, once["sparsegpt"], atol=1e-5)
