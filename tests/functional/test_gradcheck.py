"""float64 gradcheck and gradgradcheck of every functional, with a fixed seed.

With a fixed ``seed`` each function is deterministic in its differentiable
inputs, so finite differences must match autograd (and the backward of the
backward, for the mask-engine functions whose backward is the same op).
Also: continuous noise is drawn in the input's precision, and tensors that are
not dense data get a clear TypeError.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import dropkit as dk
from dropkit import functional as F


def _x(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # away from 0 so that no kept value is mistaken for a dropped one
    x = torch.rand(*shape, generator=gen, dtype=torch.float64) + 0.5
    return x.requires_grad_()


def _seeded(fn, *args):
    """``fn`` (which has torchvision's signature, no ``seed=``) with a fixed mask."""
    torch.manual_seed(4)
    return fn(*args)


CASES = {
    "dropout": (lambda x: F.dropout(x, 0.4, seed=1), (6, 5)),
    "dropout classic": (lambda x: F.dropout(x, 0.4, inverted=False, seed=1), (6, 5)),
    "dropout classic eval": (lambda x: F.dropout(x, 0.4, False, inverted=False), (6, 5)),
    "dropout1d": (lambda x: F.dropout1d(x, 0.5, seed=3), (3, 4, 5)),
    "dropout2d": (lambda x: F.dropout2d(x, 0.5, seed=3), (3, 4, 2, 3)),
    "dropout3d": (lambda x: F.dropout3d(x, 0.5, seed=3), (2, 4, 2, 2, 2)),
    "drop_path row": (lambda x: F.drop_path(x, 0.5, seed=4), (6, 3, 2)),
    "drop_path batch": (lambda x: F.drop_path(x, 0.5, mode="batch", seed=5), (6, 3)),
    "dropblock2d": (lambda x: F.dropblock2d(x, 0.3, 2, seed=6), (2, 3, 5, 5)),
    "dropblock3d": (lambda x: F.dropblock3d(x, 0.3, 2, seed=6), (1, 2, 4, 4, 4)),
    "stochastic_depth": (lambda x: _seeded(F.stochastic_depth, x, 0.5, "row"), (6, 3)),
    "drop_block2d": (lambda x: F.drop_block2d(x, 0.3, 3, seed=6), (2, 3, 5, 5)),
    "drop_block3d": (lambda x: F.drop_block3d(x, 0.3, 3, seed=6), (1, 2, 4, 4, 4)),
    "gaussian_dropout": (lambda x: F.gaussian_dropout(x, 0.3, seed=7), (6, 5)),
    "alpha_dropout": (lambda x: F.alpha_dropout(x, 0.3, True, seed=8), (6, 5)),
    "feature_alpha_dropout": (lambda x: F.feature_alpha_dropout(x, 0.5, True, seed=8), (6, 5, 2)),
    "locked_dropout": (lambda x: F.locked_dropout(x, 0.5, seed=9), (4, 3, 5)),
    "embedding_dropout (weight)": (
        lambda w: F.embedding_dropout(torch.tensor([[0, 2, 2], [5, 1, 0]]), w, 0.5, seed=10),
        (7, 4)),
    "concrete_dropout (x)": (
        lambda x: F.concrete_dropout(x, torch.tensor(-1.0, dtype=torch.float64), 0.5, seed=11),
        (6, 5)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradcheck_and_gradgradcheck(name):
    fn, shape = CASES[name]
    x = _x(*shape)
    assert fn(x).dtype == torch.float64
    assert gradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert gradgradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_gradcheck_of_a_large_input_on_the_multi_threaded_path():
    # 2**16 + 9 elements take the split path; fast mode checks random projections
    # of the Jacobian instead of building all of it (34 GB here).
    x = _x(2**16 + 9)

    def fn(x):
        return F.dropout(x, 0.3, seed=2)

    assert gradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)
    assert gradgradcheck(fn, (x,), eps=1e-6, atol=1e-7, rtol=1e-6, fast_mode=True)


def test_concrete_dropout_gradcheck_in_the_logit():
    x = _x(5, 4)
    logit = torch.tensor(-0.7, dtype=torch.float64, requires_grad=True)

    def fn(x, logit):
        return F.concrete_dropout(x, logit, 0.5, seed=12)

    assert gradcheck(fn, (x, logit), eps=1e-6, atol=1e-7, rtol=1e-6)
    assert gradgradcheck(fn, (x, logit), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_concrete_dropout_regularizer_gradcheck():
    logit = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    w = torch.tensor(2.5, dtype=torch.float64, requires_grad=True)

    def fn(logit, w):
        return F.concrete_dropout_regularizer(logit, 8, w, 1e-2, 1e-1)

    assert gradcheck(fn, (logit, w)) and gradgradcheck(fn, (logit, w))


def test_gaussian_noise_is_drawn_in_float64_for_float64_inputs():
    # float32 noise would show as values that round-trip through float32 exactly
    y = F.gaussian_dropout(torch.ones(10_000, dtype=torch.float64), 0.5, seed=1)
    assert not torch.equal(y, y.float().double())
    # N(1, p/(1-p)) = N(1, 1): mean within 5 standard errors (1/sqrt(n) = 0.01),
    # variance within 5 of its standard errors (sqrt(2/n) = 0.014)
    assert abs(y.mean().item() - 1.0) < 0.05
    assert abs(y.var().item() - 1.0) < 0.071


def test_concrete_noise_is_drawn_in_float64_for_float64_inputs():
    y = F.concrete_dropout(torch.ones(10_000, dtype=torch.float64),
                           torch.tensor(0.0, dtype=torch.float64), 0.5, seed=2)
    assert not torch.equal(y, y.float().double())


FUNCTIONS = {
    "dropout": lambda x: dk.dropout(x, 0.5),
    "dropout2d": lambda x: dk.dropout2d(x, 0.5),
    "drop_path": lambda x: dk.drop_path(x, 0.5),
    "dropblock2d": lambda x: dk.dropblock2d(x, 0.5, 2),
    "gaussian_dropout": lambda x: dk.gaussian_dropout(x, 0.5),
    "alpha_dropout": lambda x: dk.alpha_dropout(x, 0.5, True),
    "locked_dropout": lambda x: dk.locked_dropout(x, 0.5),  # checked before the rank
    "concrete_dropout": lambda x: dk.concrete_dropout(x, torch.tensor(0.0)),
}


def _sparse():
    return torch.randn(2, 3, 4, 4).to_sparse()


def _nested():
    return torch.nested.nested_tensor([torch.randn(3, 4, 4), torch.randn(3, 4, 4)])


def _meta():
    return torch.empty(2, 3, 4, 4, device="meta")


@pytest.mark.parametrize("make,words", [(_sparse, "layout=torch.sparse_coo"),
                                        (_nested, "nested tensor"),
                                        (_meta, "device='meta'")])
@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_tensors_without_dense_data_get_a_clear_type_error(name, make, words):
    with pytest.raises(TypeError, match=f"{name.split()[0]}\\(\\).*{words}"):
        FUNCTIONS[name](make())
