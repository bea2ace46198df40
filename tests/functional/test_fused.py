"""dk.bias_dropout_add and dk.residual_drop_path equal their unfused spellings.

With the same seed (``torch.manual_seed`` before each call) the fused
functions must give the unfused result bit for bit, the same gradients, and
keep nothing per element for backward; ``residual_drop_path`` must in
addition run its branch only on the kept samples.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck, gradgradcheck

import dropkit as dk


def assert_same_bits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan)
    bits = {2: torch.int16, 4: torch.int32, 8: torch.int64}[actual.element_size()]
    assert torch.equal(actual[~nan].view(bits), expected[~nan].view(bits))


def _seeded(seed, fn, *args, **kwargs):
    torch.manual_seed(seed)
    return fn(*args, **kwargs)


def _saved_tensors(fn):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, saved


# ---------------------------------------------------------------------------
# bias_dropout_add


def _unfused(x, bias, residual, p, training=True):
    return residual + dk.dropout(x if bias is None else x + bias, p, training)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [True, False])
def test_bias_dropout_add_equals_the_unfused_sequence(dtype, with_bias):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 33, 96, generator=gen).to(dtype)
    residual = torch.randn(8, 33, 96, generator=gen).to(dtype)
    bias = torch.randn(96, generator=gen).to(dtype) if with_bias else None
    for seed in (0, 1, 2):
        fused = _seeded(seed, dk.bias_dropout_add, x, bias, residual, 0.1)
        assert_same_bits(fused, _seeded(seed, _unfused, x, bias, residual, 0.1))
    # an explicit seed, and the module
    assert_same_bits(dk.bias_dropout_add(x, bias, residual, 0.3, seed=5),
                     residual + dk.dropout(x if bias is None else x + bias, 0.3, seed=5))
    module = dk.BiasDropoutAdd(0.2)
    assert_same_bits(_seeded(3, module, x, bias, residual),
                     _seeded(3, _unfused, x, bias, residual, 0.2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bias_dropout_add_gradients_equal_the_unfused_ones(dtype):
    gen = torch.Generator().manual_seed(1)
    leaves = [torch.randn(shape, generator=gen).to(dtype).requires_grad_()
              for shape in ((4, 5, 64), (64,), (4, 5, 64))]
    grad = torch.randn(4, 5, 64, generator=gen).to(dtype)
    fused = _seeded(7, dk.bias_dropout_add, *leaves, 0.4)
    got = torch.autograd.grad(fused, leaves, grad)
    unfused = _seeded(7, _unfused, *leaves, 0.4)
    expected = torch.autograd.grad(unfused, leaves, grad)
    for a, b in zip(got, expected, strict=True):
        assert_same_bits(a, b)


def test_bias_dropout_add_saves_nothing_per_element():
    x = torch.randn(16, 128, requires_grad=True)
    bias = torch.randn(128, requires_grad=True)
    residual = torch.randn(16, 128, requires_grad=True)
    y, saved = _saved_tensors(lambda: dk.bias_dropout_add(x, bias, residual, 0.5))
    assert saved == []
    y.sum().backward()
    assert x.grad is not None and bias.grad is not None and residual.grad is not None


def test_bias_dropout_add_gradcheck_float64():
    gen = torch.Generator().manual_seed(2)
    x, bias, residual = (torch.rand(shape, generator=gen, dtype=torch.float64).add_(0.5)
                         .requires_grad_() for shape in ((3, 4, 5), (4, 5), (3, 4, 5)))

    def fn(a, b, r):
        return dk.bias_dropout_add(a, b, r, 0.5, seed=11)

    assert gradcheck(fn, (x, bias, residual))
    assert gradgradcheck(fn, (x, bias, residual))


def test_bias_dropout_add_eval_p0_p1_and_empty():
    x, bias, residual = torch.randn(4, 6), torch.randn(6), torch.randn(4, 6)
    assert torch.equal(dk.bias_dropout_add(x, bias, residual, 0.5, training=False),
                       residual + (x + bias))
    assert torch.equal(dk.bias_dropout_add(x, bias, residual, 0.0), residual + (x + bias))
    assert torch.equal(dk.bias_dropout_add(x, bias, residual, 1.0), residual + 0.0)
    empty = torch.empty(0, 6)
    assert dk.bias_dropout_add(empty, bias, empty, 0.5).shape == (0, 6)
    with pytest.raises(ValueError, match="p=1.5"):
        dk.bias_dropout_add(x, bias, residual, 1.5)


def test_bias_dropout_add_drops_at_rate_p():
    p, n = 0.3, 1 << 16
    y = dk.bias_dropout_add(torch.ones(n), torch.ones(1), torch.zeros(n), p, seed=4)
    dropped = int((y == 0).sum())
    assert ((y == 0) | torch.isclose(y, torch.tensor(2 / 0.7))).all()
    assert abs(dropped - n * p) <= 5 * math.sqrt(n * p * (1 - p))


# ---------------------------------------------------------------------------
# residual_drop_path


class _RowWise(nn.Module):
    """A branch whose rows are computed the same way in any batch: LayerNorm and
    element-wise ops only, so the comparison below can be bit for bit anywhere."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.gain = nn.Parameter(torch.linspace(-1.0, 2.0, d))

    def forward(self, x):
        return torch.tanh(self.norm(x) * self.gain) + 0.1


class _Counting(nn.Module):
    def __init__(self, branch):
        super().__init__()
        self.branch, self.rows = branch, []

    def forward(self, x):
        self.rows.append(x.shape[0])
        return self.branch(x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("mode", ["row", "batch"])
@pytest.mark.parametrize("scale_by_keep", [True, False])
def test_residual_drop_path_equals_x_plus_drop_path(dtype, mode, scale_by_keep):
    branch = _RowWise(24).to(dtype)
    x = torch.randn(64, 5, 24).to(dtype)
    x[0, 0, :2] = torch.tensor([-0.0, float("nan")])
    for seed in range(4):
        fused = _seeded(seed, dk.residual_drop_path, x, branch, 0.3,
                        scale_by_keep=scale_by_keep, mode=mode)
        unfused = _seeded(seed, lambda: x + dk.drop_path(branch(x), 0.3,
                                                         scale_by_keep=scale_by_keep, mode=mode))
        assert_same_bits(fused, unfused)
        # the generator is left where the unfused spelling leaves it
        assert torch.equal(torch.get_rng_state(), _seeded(seed, lambda: (
            dk.drop_path(torch.ones(64, 1), 0.3, mode=mode), torch.get_rng_state())[1]))


def test_residual_drop_path_with_an_mlp_branch_matches_closely():
    # Linear's result for a row could depend on the batch size with another BLAS
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 128), nn.GELU(), nn.Linear(128, 32))
    x = torch.randn(50, 32)
    fused = _seeded(1, dk.residual_drop_path, x, mlp, 0.4)
    unfused = _seeded(1, lambda: x + dk.drop_path(mlp(x), 0.4))
    torch.testing.assert_close(fused, unfused)
    assert torch.equal(fused == x + 0.0, unfused == x + 0.0)  # the same rows dropped


def test_the_branch_runs_on_the_kept_rows_only():
    branch = _Counting(_RowWise(8))
    x = torch.randn(256, 8)
    y = dk.residual_drop_path(x, branch, 0.5, seed=3)
    keep = dk.drop_path(torch.ones(256, 1), 0.5, seed=3) != 0
    assert branch.rows == [int(keep.sum())]
    assert torch.equal(y[~keep[:, 0]], x[~keep[:, 0]] + 0.0)
    # kept count is Binomial(256, 1/2): within 5 standard deviations
    assert abs(branch.rows[0] - 128) <= 5 * math.sqrt(64)


def test_residual_drop_path_gradcheck_float64():
    torch.manual_seed(0)
    branch = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 4)).double()
    x = torch.randn(7, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = branch[0].weight

    def fn(x, w):
        return dk.residual_drop_path(x, lambda t: branch(t) * w.sum(), 0.5, seed=5)

    w = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert gradcheck(fn, (x, w))
    # and the gradient equals the unfused one
    y = dk.residual_drop_path(x, branch, 0.5, seed=5)
    got = torch.autograd.grad(y.square().sum(), (x, weight))
    y2 = x + dk.drop_path(branch(x), 0.5, seed=5)
    expected = torch.autograd.grad(y2.square().sum(), (x, weight))
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_residual_drop_path_eval_p0_and_p1():
    branch = _Counting(_RowWise(8))
    x = torch.randn(16, 8, requires_grad=True)
    state = torch.get_rng_state()
    assert torch.equal(dk.residual_drop_path(x, branch, 0.5, training=False), x + branch(x))
    assert torch.equal(dk.residual_drop_path(x, branch, 0.0), x + branch(x))
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn
    branch.rows.clear()
    y = dk.residual_drop_path(x, branch, 1.0)
    assert branch.rows == [] and torch.equal(y, x) and y is not x
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert branch.branch.gain.grad is None  # the branch never ran


def test_residual_drop_path_writes_nothing_into_x():
    x = torch.randn(32, 8)
    before, version = x.clone(), x._version
    dk.residual_drop_path(x, _RowWise(8), 0.5, seed=1)
    assert torch.equal(x, before) and x._version == version


def test_residual_drop_path_refuses_batch_norm_in_training_and_shape_changes():
    x = torch.randn(8, 4)
    bn_branch = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"BatchNorm in training mode \(1\)"):
        dk.residual_drop_path(x, bn_branch, 0.2)
    bn_branch.eval()  # running statistics: rows independent again
    dk.residual_drop_path(x, bn_branch, 0.2)
    with pytest.raises(ValueError, match="keeps the shape"):
        dk.residual_drop_path(x, nn.Linear(4, 3), 0.2, seed=0)
    with pytest.raises(ValueError, match="mode="):
        dk.residual_drop_path(x, nn.Identity(), 0.2, mode="col")
