"""dk.Dropout and the channel-dropout modules as drop-ins for torch's.

Tolerances: 5 binomial standard deviations (see tests/test_functional.py).
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import pickle

import pytest
import torch
from torch import nn

import dropkit as dk

PAIRS = [
    (dk.Dropout, nn.Dropout),
    (dk.Dropout1d, nn.Dropout1d),
    (dk.Dropout2d, nn.Dropout2d),
    (dk.Dropout3d, nn.Dropout3d),
]


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_same_constructor_as_torch(ours, theirs):
    torch_params = list(inspect.signature(theirs.__init__).parameters.values())[1:]
    our_params = inspect.signature(ours.__init__).parameters
    for param in torch_params:
        assert param.name in our_params
        assert our_params[param.name].default == param.default
    m = ours(0.3, True)
    assert m.p == 0.3 and m.inplace is True


@pytest.mark.parametrize("ours,theirs", PAIRS)
def test_extra_repr_no_state_and_pickle(ours, theirs):
    m = ours(0.25)
    assert "p=0.25" in repr(m) and "inplace=False" in repr(m)
    assert list(m.parameters()) == [] and list(m.buffers()) == []
    assert m.state_dict() == theirs(0.25).state_dict() == {}
    m.load_state_dict({})
    clone = pickle.loads(pickle.dumps(m))
    assert type(clone) is ours and clone.p == 0.25
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=False).p == 0.25
    assert copy.deepcopy(m).p == 0.25


def test_dropout_repr_mentions_formulation():
    assert repr(dk.Dropout(0.5, inverted=False)) == "Dropout(p=0.5, inplace=False, inverted=False)"


def test_train_eval_semantics_match_torch():
    x = torch.randn(32, 64)
    for m in (dk.Dropout(0.4), nn.Dropout(0.4)):
        m.eval()
        assert torch.equal(m(x), x)
        m.train()
        y = m(x)
        kept = y != 0
        torch.testing.assert_close(y[kept], x[kept] / 0.6)
    classic = dk.Dropout(0.4, inverted=False).eval()
    torch.testing.assert_close(classic(x), x * 0.6)


def test_same_statistics_as_torch():
    # Two independent binomial samples of n: their difference has standard
    # deviation sqrt(2 p (1-p) / n); allow 5 of them.
    p, n = 0.3, 500_000
    torch.manual_seed(0)
    ours = (dk.Dropout(p)(torch.ones(n)) == 0).double().mean().item()
    theirs = (nn.Dropout(p)(torch.ones(n)) == 0).double().mean().item()
    assert abs(ours - theirs) <= 5 * math.sqrt(2 * p * (1 - p) / n) + 2**-16


def test_module_backward_in_a_network():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), dk.Dropout(0.5), nn.Linear(20, 2))
    loss = net(torch.randn(8, 10)).pow(2).sum()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_inplace_module():
    x = torch.randn(50)
    y = dk.Dropout(0.5, inplace=True)(x)
    assert y is x


@pytest.mark.parametrize("cls,shape", [(dk.Dropout1d, (4, 8, 5)), (dk.Dropout2d, (4, 8, 3, 3)),
                                       (dk.Dropout3d, (4, 8, 2, 2, 2))])
def test_channel_modules_zero_channels_and_eval_identity(cls, shape):
    torch.manual_seed(2)
    m = cls(0.5)
    x = torch.rand(shape) + 0.5
    y = m(x).reshape(shape[0], shape[1], -1)
    assert ((y == 0).all(-1) | (y != 0).all(-1)).all()
    m.eval()
    assert m(x) is x


@pytest.mark.slow
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    net = nn.Sequential(nn.Linear(16, 16), dk.Dropout(0.5), nn.Linear(16, 16),
                        dk.DropPath(0.3), dk.Dropout1d(0.2))
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x = torch.randn(8, 4, 16)
    torch.manual_seed(3)
    out, out2 = compiled(x), compiled(x)
    torch.manual_seed(3)
    torch.testing.assert_close(compiled(x), out)  # torch.manual_seed governs it
    assert not torch.equal(out, out2)  # a fresh mask per call, not one baked into the graph
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    torch.testing.assert_close(compiled(x), net(x))


@pytest.mark.slow
def test_torch_compile_inductor_saves_no_mask():
    torch._dynamo.reset()
    fn = torch.compile(lambda t: dk.dropout(t, 0.5) * 3, fullgraph=True)
    x = torch.ones(4096, requires_grad=True)
    torch.manual_seed(0)
    y = fn(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 6.0))
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, kept * 6.0)
