"""GaussianDropout and AlphaDropout: defining moments, train/eval, gradients, errors.

Tolerances: 5 standard errors. For a sample mean of n i.i.d. values with
variance v the standard error is sqrt(v / n); for a sample variance it is
sqrt((m4 - v**2) / n) with m4 the fourth central moment (for a normal
m4 = 3 v**2, so sqrt(2 / n) v). The moments are computed analytically below,
not from the sample. A fraction is binomial: sqrt(q (1 - q) / n).
"""

from __future__ import annotations

import math

import pytest
import torch

import dropkit as dk
from dropkit.functional import SELU_ALPHA_PRIME

N = 400_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_gaussian_noise_has_mean_one_and_variance_p_over_1_minus_p(p):
    torch.manual_seed(0)
    noise = dk.gaussian_dropout(torch.ones(N, dtype=torch.float64), p)
    v = p / (1 - p)
    assert abs(noise.mean().item() - 1.0) <= 5 * math.sqrt(v / N)
    assert abs(noise.var().item() - v) <= 5 * math.sqrt(2 / N) * v
    # Normal, not two-valued: the fraction within one std of the mean is 0.6827.
    q = math.erf(1 / math.sqrt(2))
    within = ((noise - 1).abs() <= math.sqrt(v)).double().mean().item()
    assert abs(within - q) <= 5 * math.sqrt(q * (1 - q) / N)


def test_gaussian_train_eval_grad_and_seed():
    x = torch.randn(64, 32, requires_grad=True)
    m = dk.GaussianDropout(0.3)
    assert m.eval()(x) is x
    assert dk.gaussian_dropout(x, 0.0) is x
    m.train()
    torch.manual_seed(1)
    y = m(x)
    y.sum().backward()
    torch.manual_seed(1)
    noise = m(torch.ones(64, 32))
    assert torch.allclose(x.grad, noise)  # d(x * eps)/dx = eps
    assert torch.allclose(y, x.detach() * noise)
    assert not torch.equal(m(torch.ones(64, 32)), noise)  # fresh noise each call
    assert torch.equal(dk.gaussian_dropout(x, 0.3, seed=4), dk.gaussian_dropout(x, 0.3, seed=4))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_gaussian_dtypes(dtype):
    n, p = 4000, 0.2
    torch.manual_seed(0)
    y = dk.GaussianDropout(p)(torch.ones(n, dtype=dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    # the noise is there in every dtype (an identity would leave every entry at 1):
    # its standard deviation sqrt(p / (1 - p)) = 0.5, within 5 standard errors
    # (sqrt(1 / (2 n)) of it) plus half-precision rounding
    std = math.sqrt(p / (1 - p))
    assert abs(y.double().std().item() - std) <= 5 * std * math.sqrt(1 / (2 * n)) + 0.01
    assert abs(y.double().mean().item() - 1.0) <= 5 * std / math.sqrt(n) + 0.01


def test_gaussian_bad_arguments():
    with pytest.raises(ValueError, match=r"p=1\.0"):
        dk.GaussianDropout(1.0)
    with pytest.raises(ValueError, match=r"p=1\.0"):
        dk.gaussian_dropout(torch.ones(3), 1.0)
    with pytest.raises(ValueError, match=r"p=-0\.1"):
        dk.GaussianDropout(-0.1)
    with pytest.raises(TypeError, match="floating-point"):
        dk.gaussian_dropout(torch.ones(3, dtype=torch.int32), 0.1)
    assert repr(dk.GaussianDropout(0.2)) == "GaussianDropout(p=0.2)"


def _alpha_constants(p):
    a = ((1 - p) * (1 + p * SELU_ALPHA_PRIME**2)) ** -0.5
    b = -a * SELU_ALPHA_PRIME * p
    return a, b, a * SELU_ALPHA_PRIME + b


@pytest.mark.parametrize("p", [0.05, 0.2, 0.5])
def test_alpha_dropout_keeps_mean_zero_variance_one(p):
    torch.manual_seed(0)
    x = torch.randn(N, dtype=torch.float64)
    y = dk.alpha_dropout(x, p, training=True)
    # Analytic moments of y: a x + b w.p. 1-p (x ~ N(0,1)), the constant c w.p. p.
    a, b, c = _alpha_constants(p)
    m2 = 1.0  # E[y] = 0 and E[y^2] = 1 by construction of a and b
    m4 = (1 - p) * (3 * a**4 + 6 * a**2 * b**2 + b**4) + p * c**4
    assert (1 - p) * b + p * c == pytest.approx(0.0, abs=1e-12)
    assert (1 - p) * (a**2 + b**2) + p * c**2 == pytest.approx(1.0)
    assert abs(y.mean().item()) <= 5 * math.sqrt(m2 / N)
    assert abs(y.var().item() - 1.0) <= 5 * math.sqrt((m4 - 1.0) / N)
    # the dropped units sit at the single value c, a fraction p of them
    dropped = (y == c).double().mean().item()
    assert abs(dropped - p) <= 5 * math.sqrt(p * (1 - p) / N)


def test_alpha_dropout_same_values_as_torch():
    # On a zero input ours and torch's produce the same two values {b, c}.
    torch.manual_seed(0)
    ours = dk.alpha_dropout(torch.zeros(10_000, dtype=torch.float64), 0.3, True).unique()
    theirs = torch.nn.functional.alpha_dropout(
        torch.zeros(10_000, dtype=torch.float64), 0.3, True
    ).unique()
    assert torch.allclose(ours, theirs)


def test_alpha_selu_network_stays_normalised():
    # Through a SELU layer with LeCun-normal weights, mean 0 / var 1 survives dropout.
    torch.manual_seed(1)
    layer = torch.nn.Linear(256, 256, bias=False)
    torch.nn.init.normal_(layer.weight, std=1 / math.sqrt(256))
    x = torch.randn(2000, 256)
    with torch.no_grad():
        h = dk.alpha_dropout(torch.selu(layer(x)), 0.2, True)
    assert abs(h.mean().item()) < 0.05 and abs(h.var().item() - 1.0) < 0.1


def test_alpha_train_eval_grad_edge_cases():
    x = torch.randn(50, 40, requires_grad=True)
    m = dk.AlphaDropout(0.2)
    assert m.eval()(x) is x
    m.train()
    torch.manual_seed(3)
    y = m(x)
    y.sum().backward()
    a, b, c = _alpha_constants(0.2)
    kept = y.detach() != torch.tensor(c, dtype=y.dtype)
    assert torch.allclose(x.grad, kept.float() * a)
    assert torch.allclose(y[kept], x.detach()[kept] * a + b)
    z = dk.alpha_dropout(x, 1.0, True)
    assert torch.equal(z, torch.zeros_like(x))
    assert dk.alpha_dropout(x, 0.0, True) is x
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        assert dk.AlphaDropout(0.2)(torch.randn(64, dtype=dtype)).dtype == dtype
    with pytest.raises(ValueError, match=r"p=2"):
        dk.AlphaDropout(2)
    with pytest.raises(TypeError, match="p='0.1'"):
        dk.AlphaDropout("0.1")
