"""In-place dropout behaves for autograd exactly like torch's in-place dropout.

Every case runs torch's ``F.dropout(..., inplace=True)`` and dropkit's in-place
routes on the same situation, side by side: the same outcome (success, or the
same exception type with torch's message), the same version-counter bump, and
where autograd records the op, a gradient that matches the mask applied.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit import engine

SIZES = (8, 2**17)  # small (a plain loop) and large (the split, multi-threaded path)


def _torch_dropout(x):
    return torch.nn.functional.dropout(x, 0.5, training=True, inplace=True)


def _as_channels(x):
    return x.view(2, 2, -1)  # (4, n) as (N=2, C=2, L): a view, for torch and dropkit alike


def _routes():
    """In-place dropkit callables ``f(x)``, each with the torch call it must match."""
    return {
        "dk.dropout": (lambda x: dk.dropout(x, 0.5, inplace=True), _torch_dropout),
        "dk.Dropout": (lambda x: dk.Dropout(0.5, inplace=True)(x), _torch_dropout),
        "dk.dropout classic": (lambda x: dk.dropout(x, 0.5, inplace=True, inverted=False),
                               _torch_dropout),
        "dk.dropout1d": (
            lambda x: dk.dropout1d(_as_channels(x), 0.5, inplace=True),
            lambda x: torch.nn.functional.dropout1d(_as_channels(x), 0.5, inplace=True)),
        "engine.dropout_": (lambda x: engine.dropout_(x, 0.5, 2.0, seed=3), _torch_dropout),
    }


def _outcome(case, route, n):
    """What happens: ('ok', version bump) or (exception type, first words of its message)."""
    torch.manual_seed(0)
    try:
        bump = case(route, n)
    except RuntimeError as exc:
        return ("RuntimeError", str(exc).split(".")[0][:60])
    return ("ok", bump)


def _saved_by_linear(route, n):
    # lin saves x for its weight gradient; x itself does not require grad
    lin = nn.Linear(n, 3)
    x = torch.randn(4, n)
    out = lin(x)
    route(x)
    out.sum().backward()
    return None


def _saved_by_mul_under_no_grad(route, n):
    x = torch.randn(4, n, requires_grad=True)
    out = (x * x).sum()
    with torch.no_grad():
        route(x)
    out.backward()
    return None


def _leaf(route, n):
    x = torch.randn(4, n, requires_grad=True)
    route(x)
    return None


def _view_of_leaf(route, n):
    x = torch.randn(8, n, requires_grad=True)
    route(x[:4])
    return None


def _leaf_under_no_grad(route, n):
    x = torch.randn(4, n, requires_grad=True)
    before = x._version
    with torch.no_grad():
        route(x)
    return x._version - before


def _plain_tensor(route, n):
    x = torch.randn(4, n)
    before = x._version
    route(x)
    return x._version - before


def _plain_tensor_no_grad(route, n):
    x = torch.randn(4, n)
    before = x._version
    with torch.no_grad():
        route(x)
    return x._version - before


def _inference_tensor_outside(route, n):
    with torch.inference_mode():
        x = torch.randn(4, n)
    route(x)
    return None


def _inference_tensor_inside(route, n):
    with torch.inference_mode():
        x = torch.randn(4, n)
        route(x)
    return None


def _normal_tensor_inside_inference_mode(route, n):
    x = torch.randn(4, n)
    before = x._version
    with torch.inference_mode():
        route(x)
    return x._version - before


def _discontiguous_plain(route, n):
    x = torch.randn(n, 4).t()
    before = x._version
    route(x)
    return x._version - before


CASES = {
    "saved by Linear": _saved_by_linear,
    "saved by mul, modified under no_grad": _saved_by_mul_under_no_grad,
    "leaf requiring grad": _leaf,
    "view of a leaf": _view_of_leaf,
    "leaf under no_grad": _leaf_under_no_grad,
    "plain tensor": _plain_tensor,
    "plain tensor under no_grad": _plain_tensor_no_grad,
    "inference tensor outside inference mode": _inference_tensor_outside,
    "inference tensor inside inference mode": _inference_tensor_inside,
    "normal tensor inside inference mode": _normal_tensor_inside_inference_mode,
}


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
@pytest.mark.parametrize("route", list(_routes()), ids=list(_routes()))
def test_in_place_matches_torch(route, case, n):
    ours, theirs = _routes()[route]
    expected = _outcome(CASES[case], theirs, n)
    got = _outcome(CASES[case], ours, n)
    assert got == expected


@pytest.mark.parametrize("n", SIZES)
def test_discontiguous_in_place_is_written_back_and_counted(n):
    x = torch.randn(n, 4).t()  # (4, n), not contiguous
    expected = dk.dropout(x.clone(), 0.5, seed=11)
    before = x._version
    out = dk.dropout(x, 0.5, inplace=True, seed=11)
    assert out is x and x._version == before + 1
    assert torch.equal(x, expected)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("route", list(_routes()), ids=list(_routes()))
def test_in_place_on_a_non_leaf_has_the_gradient_of_its_mask(route, n):
    torch.manual_seed(1)
    w = torch.randn(4, n, requires_grad=True)
    y = w * 1.0
    out = _routes()[route][0](y)
    assert y.grad_fn is not None and out.data_ptr() == y.data_ptr()
    y.sum().backward()
    kept = y.detach() != 0  # w has no zeros, so the zeros of y are the dropped entries
    scale = 1.0 if route == "dk.dropout classic" else 2.0
    assert torch.equal(w.grad, kept.to(w.dtype) * scale)
