"""ConcreteDropout: the relaxed Bernoulli, its regulariser, and a learned p.

Tolerance: for the relaxed drop indicator z = sigmoid((logit(p) + L) / t),
L ~ Logistic(0, 1), P(z > 1/2) = P(L > -logit(p)) = p exactly, for every
temperature. So the fraction of elements with z > 1/2 over n elements is
binomial: within 5 sqrt(p (1 - p) / n) of p.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit.functional import concrete_dropout_regularizer


@pytest.mark.parametrize("p,temperature", [(0.1, 0.1), (0.5, 0.5), (0.3, 0.01)])
def test_relaxed_bernoulli_drops_with_probability_p(p, temperature):
    torch.manual_seed(0)
    n = 200_000
    cd = dk.ConcreteDropout(p, temperature=temperature)
    y = cd(torch.ones(n, 1))
    z = 1 - y * (1 - p)  # y = (1 - z) / (1 - p)
    assert z.min() >= 0 and z.max() <= 1
    frac = (z > 0.5).double().mean().item()
    assert abs(frac - p) <= 5 * math.sqrt(p * (1 - p) / n)
    # a low temperature pushes z to {0, 1}
    if temperature <= 0.01:
        assert ((z < 0.01) | (z > 0.99)).double().mean().item() > 0.95


def test_p_logit_gets_a_gradient_and_eval_is_identity():
    torch.manual_seed(1)
    cd = dk.ConcreteDropout(0.2)
    x = torch.randn(32, 10, requires_grad=True)
    cd(x).pow(2).sum().backward()
    assert cd.p_logit.grad is not None and cd.p_logit.grad.abs() > 0
    assert x.grad is not None
    cd.eval()
    assert cd(x) is x
    assert cd.p == pytest.approx(0.2)
    assert dk.ConcreteDropout(0.2)(torch.randn(4, 3, dtype=torch.float64)).dtype == torch.float64


def test_regularization_value():
    layer = nn.Linear(6, 3)
    cd = dk.ConcreteDropout(0.5, weight_regularizer=1e-2, dropout_regularizer=1e-3, layer=layer)
    cd(torch.randn(4, 6))
    w2 = layer.weight.detach().pow(2).sum().item()  # kernel only, as the reference wrapper
    expected = 1e-2 * w2 / 0.5 + 1e-3 * 6 * (-math.log(2))
    assert cd.regularization().item() == pytest.approx(expected, rel=1e-5)
    model = nn.Sequential(cd, nn.ReLU(), dk.ConcreteDropout(0.1, dropout_regularizer=0.0))
    model(torch.randn(4, 6))
    assert dk.concrete_regularization(model).item() == pytest.approx(expected, rel=1e-5)
    assert concrete_dropout_regularizer(torch.tensor(0.0), 10, 0.0, 0.0, 1.0).item() == (
        pytest.approx(-10 * math.log(2))
    )


def test_p_moves_during_training():
    # A noise-free linear regression: dropout only adds noise, so the data
    # loss pulls p down; with a strong entropy term the regulariser pulls it up.
    torch.manual_seed(0)
    x = torch.randn(256, 8)
    y = x @ torch.randn(8, 1)

    def fit(p_init, dropout_regularizer):
        cd = dk.ConcreteDropout(
            p_init, weight_regularizer=1e-6, dropout_regularizer=dropout_regularizer,
            layer=nn.Linear(8, 1),
        )
        opt = torch.optim.Adam(cd.parameters(), lr=0.05)
        for _ in range(150):
            loss = (cd(x) - y).pow(2).mean() + cd.regularization()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return cd.p

    assert fit(0.3, 1e-5) < 0.1  # down from 0.3
    assert fit(0.05, 10.0) > 0.3  # up from 0.05 towards the entropy maximum 0.5


def test_bad_arguments():
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match=f"p_init={bad}"):
            dk.ConcreteDropout(bad)
    with pytest.raises(ValueError, match="temperature=0"):
        dk.ConcreteDropout(0.1, temperature=0)
    with pytest.raises(ValueError, match="weight_regularizer=-1"):
        dk.ConcreteDropout(0.1, weight_regularizer=-1)
    with pytest.raises(TypeError, match="Received: str"):
        dk.ConcreteDropout(0.1, layer="linear")
    with pytest.raises(RuntimeError, match="call the module on a batch first"):
        dk.ConcreteDropout(0.1).regularization()
    assert "p=0.1" in repr(dk.ConcreteDropout(0.1))
