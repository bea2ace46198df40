"""Semantics and statistics of dropkit.functional: dropout, channel dropout, drop_path.

Statistical tolerances: with n independent Bernoulli draws the observed drop
fraction has standard deviation sqrt(p(1-p)/n). We allow 5 standard
deviations (two-sided false-alarm probability ~6e-7 per check), plus the
mask engine's quantisation of p to multiples of 2**-16.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import dropkit as dk

QUANTUM = 2.0**-16
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def binomial_tol(p: float, n: int, sigmas: float = 5.0) -> float:
    return sigmas * math.sqrt(p * (1 - p) / n) + QUANTUM


# ---------------------------------------------------------------- dropout
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_drop_fraction_matches_p(p):
    torch.manual_seed(0)
    n = 200_000
    y = dk.dropout(torch.ones(n), p)
    frac = (y == 0).double().mean().item()
    assert abs(frac - p) <= binomial_tol(p, n)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.75])
def test_kept_values_exact(p):
    torch.manual_seed(1)
    x = torch.ones(10_000)
    inv = dk.dropout(x, p)
    assert set(inv.unique().tolist()) == {0.0, 1.0 / (1 - p)}
    classic = dk.dropout(x, p, inverted=False)
    assert set(classic.unique().tolist()) == {0.0, 1.0}


@pytest.mark.parametrize("p", [0.1, 0.5])
@pytest.mark.parametrize("inverted", [True, False])
def test_train_mean_equals_eval_output(p, inverted):
    # E[y_train] = y_eval for both formulations; per-element std of y_train for
    # x = 1 is sqrt(p(1-p))/(1-p) (inverted) or sqrt(p(1-p)) (classic).
    torch.manual_seed(2)
    n = 200_000
    x = torch.ones(n, dtype=torch.float64)
    train_mean = dk.dropout(x, p, inverted=inverted).mean().item()
    eval_out = dk.dropout(x, p, training=False, inverted=inverted)[0].item()
    std = math.sqrt(p * (1 - p)) / ((1 - p) if inverted else 1.0)
    assert abs(train_mean - eval_out) <= 5 * std / math.sqrt(n) + 2 * QUANTUM


def test_eval_semantics():
    x = torch.randn(4, 5)
    assert dk.dropout(x, 0.3, training=False) is x
    torch.testing.assert_close(dk.dropout(x, 0.3, training=False, inverted=False), x * 0.7)
    # never both: the classic eval rule is the only place (1-p) appears
    assert torch.equal(dk.dropout(x, 0.0, training=False, inverted=False), x)


def test_p_zero_and_eval_do_not_draw():
    x = torch.randn(100)
    maps = torch.randn(2, 3, 4, 4)
    state = torch.get_rng_state()
    assert dk.dropout(x, 0.0) is x
    assert dk.dropout(x, 0.5, training=False) is x
    assert dk.dropout(x, 0.5, training=False, inverted=False) is not x
    assert dk.drop_path(x, 0.0) is x
    assert dk.drop_path(x, 0.9, training=False) is x
    assert dk.dropout2d(maps, 0.0) is maps
    assert dk.dropout2d(maps, 0.5, training=False) is maps
    assert torch.equal(torch.get_rng_state(), state)


def test_p_one_gives_zeros_and_zero_grads_never_nan():
    x = torch.tensor([1.0, -2.0, float("inf"), 3.0], requires_grad=True)
    for inverted in (True, False):
        y = dk.dropout(x, 1.0, inverted=inverted)
        assert torch.equal(y, torch.zeros(4))
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(g, torch.zeros(4))
    y = dk.drop_path(torch.full((3, 2), float("inf")), 1.0)
    assert torch.equal(y, torch.zeros(3, 2))
    assert torch.equal(dk.dropout2d(torch.ones(2, 3, 2, 2), 1.0), torch.zeros(2, 3, 2, 2))


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_gradient_is_mask_over_keep(p):
    torch.manual_seed(3)
    x = torch.randn(1000, dtype=torch.float64, requires_grad=True)
    y = dk.dropout(x, p, seed=123)
    upstream = torch.randn(1000, dtype=torch.float64)
    (g,) = torch.autograd.grad(y, x, upstream)
    keep = dk.dropout(torch.ones(1000, dtype=torch.float64), p, seed=123) != 0
    torch.testing.assert_close(g, keep * upstream / (1 - p))
    torch.testing.assert_close(y, keep * x.detach() / (1 - p))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_dtypes_kept_values_are_scaled_inputs(dtype):
    torch.manual_seed(4)
    x = torch.randn(4096).to(dtype)
    y = dk.dropout(x, 0.5)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    torch.testing.assert_close(y[kept], (x[kept].float() * 2).to(dtype))
    assert abs(kept.float().mean().item() - 0.5) <= binomial_tol(0.5, 4096)


def test_empty_and_noncontiguous():
    assert dk.dropout(torch.empty(0, 3), 0.5).shape == (0, 3)
    base = torch.randn(64, 32)
    xt = base.t()  # non-contiguous view
    assert not xt.is_contiguous()
    y = dk.dropout(xt, 0.5, seed=7)
    assert y.shape == xt.shape
    # the mask follows the logical row-major order, not the storage order
    assert torch.equal(y, dk.dropout(xt.contiguous(), 0.5, seed=7))


def test_inplace_returns_same_storage_and_same_values():
    x = torch.randn(1000)
    expected = dk.dropout(x, 0.4, seed=11)
    ptr = x.data_ptr()
    y = dk.dropout(x, 0.4, inplace=True, seed=11)
    assert y is x and y.data_ptr() == ptr
    assert torch.equal(y, expected)


def test_inplace_with_autograd():
    torch.manual_seed(5)
    w = torch.randn(100, requires_grad=True)
    h = w * 1.0
    y = dk.dropout(h, 0.5, inplace=True, seed=3)
    assert y is h
    (g,) = torch.autograd.grad(y.sum(), w)
    keep = dk.dropout(torch.ones(100), 0.5, seed=3) != 0
    torch.testing.assert_close(g, keep * 2.0)


def test_classic_eval_inplace():
    x = torch.ones(3)
    y = dk.dropout(x, 0.25, training=False, inplace=True, inverted=False)
    assert y is x and torch.equal(x, torch.full((3,), 0.75))


def test_manual_seed_reproducible_and_calls_differ():
    x = torch.ones(1000)
    torch.manual_seed(42)
    a, b = dk.dropout(x, 0.5), dk.dropout(x, 0.5)
    torch.manual_seed(42)
    a2, b2 = dk.dropout(x, 0.5), dk.dropout(x, 0.5)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert not torch.equal(a, b)


def test_seed_fixes_mask():
    x = torch.ones(1000)
    torch.manual_seed(0)
    a = dk.dropout(x, 0.5, seed=99)
    torch.manual_seed(1)
    b = dk.dropout(x, 0.5, seed=99)
    assert torch.equal(a, b)
    assert not torch.equal(a, dk.dropout(x, 0.5, seed=100))


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 9), min_size=0, max_size=4),
    dtype=st.sampled_from(FLOAT_DTYPES),
    p=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**64 - 1),
)
def test_property_outputs_are_zero_or_scaled_input(shape, dtype, p, seed):
    x = (torch.rand(shape, dtype=torch.float32) + 0.5).to(dtype)  # strictly nonzero
    y = dk.dropout(x, p, seed=seed)
    assert y.shape == x.shape and y.dtype == dtype
    scale = 0.0 if p == 1.0 else 1.0 / (1.0 - p)
    kept = y != 0
    if p == 1.0:
        assert not kept.any()
    torch.testing.assert_close(y[kept], (x[kept].float() * scale).to(dtype))


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), -float("inf")])
def test_bad_p_value(bad):
    with pytest.raises(ValueError, match=r"Received: p="):
        dk.dropout(torch.ones(3), bad)
    with pytest.raises(ValueError, match="`p`"):
        dk.Dropout(bad)
    with pytest.raises(ValueError, match="`p`"):
        dk.drop_path(torch.ones(3), bad)
    with pytest.raises(ValueError, match="`p`"):
        dk.DropPath(bad)
    with pytest.raises(ValueError, match="`p`"):
        dk.Dropout2d(bad)


@pytest.mark.parametrize("bad", ["0.5", None, True, [0.5]])
def test_bad_p_type(bad):
    with pytest.raises(TypeError, match="`p`"):
        dk.dropout(torch.ones(3), bad)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool])
def test_integer_and_bool_tensors_rejected(dtype):
    x = torch.ones(3, dtype=dtype)
    for fn in (dk.dropout, dk.drop_path):
        with pytest.raises(TypeError, match=str(dtype)):
            fn(x, 0.5)
    with pytest.raises(TypeError, match=str(dtype)):
        dk.dropout2d(torch.ones(1, 2, 2, 2, dtype=dtype), 0.5)


def test_errors_raised_before_any_work():
    x = torch.ones(4)
    state = torch.get_rng_state()
    with pytest.raises(ValueError):
        dk.dropout(x, 2.0, inplace=True)
    assert torch.equal(x, torch.ones(4))
    assert torch.equal(torch.get_rng_state(), state)


def test_bad_mode_lists_choices():
    with pytest.raises(ValueError, match=r"'row', 'batch'.*Received: mode='col'"):
        dk.drop_path(torch.ones(2, 3), 0.5, mode="col")
    with pytest.raises(ValueError, match="'row', 'batch'"):
        dk.DropPath(0.1, mode="sample")


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, "1"])
def test_bad_seed(seed):
    with pytest.raises((ValueError, TypeError), match="seed"):
        dk.dropout(torch.ones(3), 0.5, seed=seed)


def test_channel_dropout_bad_rank():
    # torch's rules: dropout2d warns and drops (N, C) channels; dropout1d raises
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        dk.dropout2d(torch.ones(2, 3), 0.5)
    with pytest.raises(ValueError, match="3D"):
        dk.dropout1d(torch.ones(5), 0.5)
    with pytest.raises(RuntimeError, match="3D"):
        dk.dropout1d(torch.ones(5), 0.5)


# ---------------------------------------------------------------- channel dropout
@pytest.mark.parametrize(
    "fn,shape,spatial",
    [
        (dk.dropout1d, (64, 16, 10), 1),
        (dk.dropout1d, (16, 10), 1),
        (dk.dropout2d, (32, 16, 5, 6), 2),
        (dk.dropout2d, (16, 5, 6), 1),  # torch's reading of a 3D input: (N, C, L)
        (dk.dropout3d, (8, 16, 3, 4, 5), 3),
        (dk.dropout3d, (16, 3, 4, 5), 3),  # unbatched (C, D, H, W)
    ],
)
@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")
def test_channel_dropout_zeroes_whole_channels(fn, shape, spatial):
    torch.manual_seed(6)
    p = 0.5
    x = torch.rand(shape) + 0.5
    y = fn(x, p)
    flat = y.reshape(*shape[: len(shape) - spatial], -1)
    zero = (flat == 0).all(-1)
    kept = (flat != 0).all(-1)
    assert torch.equal(zero | kept, torch.ones_like(zero))  # each channel all or nothing
    torch.testing.assert_close(y[y != 0], x[y != 0] * 2)
    n = zero.numel()
    assert abs(zero.float().mean().item() - p) <= binomial_tol(p, n)


# ---------------------------------------------------------------- drop_path
def test_drop_path_zeroes_whole_samples_vit_shape():
    torch.manual_seed(7)
    p, batch = 0.3, 4096
    x = torch.rand(batch, 197, 8) + 0.5
    y = dk.drop_path(x, p)
    flat = y.reshape(batch, -1)
    zero = (flat == 0).all(1)
    assert torch.equal(zero | (flat != 0).all(1), torch.ones(batch, dtype=torch.bool))
    torch.testing.assert_close(y[~zero], x[~zero] / (1 - p))
    assert abs(zero.float().mean().item() - p) <= binomial_tol(p, batch)


def test_drop_path_no_scale_and_batch_mode():
    torch.manual_seed(8)
    x = torch.rand(16, 3, 4, 4) + 0.5
    y = dk.drop_path(x, 0.5, scale_by_keep=False)
    kept = (y.reshape(16, -1) != 0).all(1)
    torch.testing.assert_close(y[kept], x[kept])
    outcomes = set()
    for _ in range(40):
        yb = dk.drop_path(x, 0.5, mode="batch")
        all_zero = bool((yb == 0).all())
        assert all_zero or bool((yb != 0).all())
        outcomes.add(all_zero)
    assert outcomes == {True, False}  # P(40 identical outcomes) = 2**-39


def test_drop_path_eval_and_gradient():
    x = torch.randn(8, 5, requires_grad=True)
    assert dk.drop_path(x, 0.5, training=False) is x
    y = dk.drop_path(x, 0.5, seed=5)
    (g,) = torch.autograd.grad(y.sum(), x)
    kept = (y != 0).all(1, keepdim=True)
    torch.testing.assert_close(g, kept.expand(8, 5).float() * 2)


def test_drop_path_rates_linear():
    rates = dk.drop_path_rates(12, 0.1)
    assert len(rates) == 12 and rates[0] == 0.0 and rates[-1] == pytest.approx(0.1)
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.1, 12))
    assert dk.drop_path_rates(1, 0.5) == [0.0]
    with pytest.raises(ValueError, match="depth"):
        dk.drop_path_rates(0, 0.1)
    with pytest.raises(ValueError, match="max_rate"):
        dk.drop_path_rates(4, 1.2)
