"""dropkit's StochasticDepth, DropPath and DropBlock as drop-ins for torchvision's and timm's.

The peers' signatures are written out below from their sources
(torchvision/ops/stochastic_depth.py, torchvision/ops/drop_block.py,
timm/layers/drop.py); neither library is a dependency. The behaviour tests
run the grids of torchvision's own tests (test/test_ops.py: TestStochasticDepth,
TestDropBlock) with dropkit's classes, with dropkit's tolerances: a count of
independent Bernoulli(p) events must lie within 5 standard deviations
sqrt(n p (1-p)) of n p (a false alarm about once in 1.7 million runs).
"""

from __future__ import annotations

import copy
import inspect
import math
import pickle

import pytest
import torch
import torch.fx
from torch import Tensor, nn

import dropkit as dk
from dropkit import functional as F


# ----------------------------------------------------------- the peers' signatures
# torchvision.ops.stochastic_depth / StochasticDepth
def tv_stochastic_depth(input: Tensor, p: float, mode: str, training: bool = True) -> Tensor: ...


class TvStochasticDepth:
    def __init__(self, p: float, mode: str) -> None: ...


# torchvision.ops.drop_block2d / drop_block3d / DropBlock2d / DropBlock3d
def tv_drop_block2d(
    input: Tensor, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06,
    training: bool = True,
) -> Tensor: ...


def tv_drop_block3d(
    input: Tensor, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06,
    training: bool = True,
) -> Tensor: ...


class TvDropBlock2d:
    def __init__(self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06): ...


class TvDropBlock3d(TvDropBlock2d):
    def __init__(self, p: float, block_size: int, inplace: bool = False, eps: float = 1e-06): ...


# timm.layers.DropPath
class TimmDropPath:
    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True): ...


def _params(obj) -> list[tuple[str, object, object]]:
    return [(q.name, q.kind, q.default) for q in inspect.signature(obj).parameters.values()]


def _assert_drop_in(ours, peer, defaults_added: tuple[str, ...] = ()) -> None:
    """Every call that binds to ``peer`` binds to ``ours`` with the same meaning.

    The peer's parameters come first, in the same places, with the same names,
    kinds and defaults (a required one may gain a default only if listed in
    ``defaults_added``); ours adds nothing but keyword-only parameters with defaults.
    """
    mine, theirs = _params(ours), _params(peer)
    assert len(mine) >= len(theirs)
    empty = inspect.Parameter.empty
    for (name, kind, default), (peer_name, peer_kind, peer_default) in zip(
        mine[: len(theirs)], theirs, strict=True
    ):
        assert (name, kind) == (peer_name, peer_kind)
        if peer_default is not empty or name not in defaults_added:
            assert default == peer_default, (name, default, peer_default)
    for name, kind, default in mine[len(theirs):]:
        assert kind is inspect.Parameter.KEYWORD_ONLY and default is not empty, name


def test_stochastic_depth_signatures_are_torchvisions():
    assert _params(dk.StochasticDepth) == _params(TvStochasticDepth)  # mode required
    assert _params(dk.stochastic_depth) == _params(tv_stochastic_depth)
    assert _params(F.stochastic_depth) == _params(tv_stochastic_depth)


def test_dropblock_signatures_are_torchvisions():
    _assert_drop_in(dk.drop_block2d, tv_drop_block2d)
    _assert_drop_in(dk.drop_block3d, tv_drop_block3d)
    # dropkit keeps its defaults p=0.1, block_size=7 (torchvision requires both)
    _assert_drop_in(dk.DropBlock2d, TvDropBlock2d, defaults_added=("p", "block_size"))
    _assert_drop_in(dk.DropBlock3d, TvDropBlock3d, defaults_added=("p", "block_size"))
    assert (dk.DropBlock2d().p, dk.DropBlock2d().block_size) == (0.1, (7, 7))


def test_drop_path_takes_every_timm_call():
    # timm's two parameters in their places and with their defaults; the first
    # keeps dropkit's name `p`, and timm's `drop_prob` is a keyword for it.
    empty = inspect.Parameter.empty
    kinds = inspect.Parameter
    assert _params(dk.DropPath) == [
        ("p", kinds.POSITIONAL_OR_KEYWORD, 0.0),
        ("scale_by_keep", kinds.POSITIONAL_OR_KEYWORD, True),
        ("mode", kinds.KEYWORD_ONLY, "row"),
        ("drop_prob", kinds.KEYWORD_ONLY, None),
    ]
    assert [d for _, _, d in _params(TimmDropPath)] == [0.0, True] and empty not in (0.0, True)
    timm_calls = [
        ((), {}, 0.0, True),
        ((0.1,), {}, 0.1, True),
        ((), {"drop_prob": 0.1}, 0.1, True),
        ((0.1, False), {}, 0.1, False),
        ((0.1,), {"scale_by_keep": False}, 0.1, False),
        ((), {"drop_prob": 0.3, "scale_by_keep": False}, 0.3, False),
    ]
    for args, kwargs, p, scale_by_keep in timm_calls:
        inspect.signature(TimmDropPath).bind(*args, **kwargs)  # a valid timm call ...
        m = dk.DropPath(*args, **kwargs)  # ... builds the same layer here
        assert (m.p, m.drop_prob, m.scale_by_keep, m.mode) == (p, p, scale_by_keep, "row")
    with pytest.raises(TypeError, match="both `p` and `drop_prob`"):
        dk.DropPath(0.2, drop_prob=0.1)
    with pytest.raises(ValueError, match="drop_prob=1.5"):
        dk.DropPath(drop_prob=1.5)


def test_drop_prob_and_p_are_one_value():
    m = dk.DropPath(drop_prob=0.1)
    m.drop_prob = 0.4
    assert m.p == 0.4
    m.p = 0.25  # what dropkit's LinearScheduler sets
    assert m.drop_prob == 0.25
    dk.LinearScheduler(m, total_steps=4, p=0.2).step()
    assert m.drop_prob == pytest.approx(0.05)
    with pytest.raises(ValueError, match="drop_prob=2"):
        m.drop_prob = 2
    assert m.p == pytest.approx(0.05)
    assert "drop_prob" not in m.__dict__  # stored once, as p
    assert pickle.loads(pickle.dumps(m)).drop_prob == pytest.approx(0.05)


# ------------------------------------------------------ timm's DropPath tests, here
def test_timm_drop_path_behaviour():
    x = torch.ones(100, 8, 4, 4)
    m = dk.DropPath(drop_prob=0.5)
    m.eval()
    assert m(x) is x
    m.train()
    assert dk.DropPath(drop_prob=0.0)(x) is x
    assert "0.123" in dk.DropPath(drop_prob=0.123).extra_repr()
    for scale_by_keep, kept_value in ((True, 1 / 0.8), (False, 1.0)):
        torch.manual_seed(42)
        y = dk.DropPath(0.2, scale_by_keep)(x)
        rows = y.reshape(100, -1)
        kept = (rows != 0).all(1)
        assert (kept | (rows == 0).all(1)).all()
        torch.testing.assert_close(rows[kept], torch.full_like(rows[kept], kept_value))
        assert abs((~kept).sum().item() - 20) <= 5 * math.sqrt(100 * 0.2 * 0.8)


# -------------------------------------------- torchvision's StochasticDepth tests, here
@pytest.mark.parametrize("mode", ["batch", "row"])
@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_stochastic_depth_drop_rate(p, mode):
    # torchvision's test_stochastic_depth_random grid: batches of 5 ones, 250
    # calls per seed, seeds 0..9; counts of zeroed rows (or zeroed batches).
    batch = 5
    x = torch.ones(batch, 3, 4, 4)
    total_count = total_n = 0
    for seed in range(10):
        torch.manual_seed(seed)
        layer = dk.StochasticDepth(p=p, mode=mode)
        layer.__repr__()
        count = n = 0
        for _ in range(250):
            out = layer(x)
            rows = out.reshape(batch, -1)
            zeroed = (rows == 0).all(1)
            assert (zeroed | (rows == 1 / (1 - p)).all(1)).all()
            if mode == "batch":
                assert zeroed.all() or not zeroed.any()
                count, n = count + int(zeroed.all()), n + 1
            else:
                count, n = count + int(zeroed.sum()), n + batch
        assert abs(count - n * p) <= 5 * math.sqrt(n * p * (1 - p)), (seed, count, n)
        total_count, total_n = total_count + count, total_n + n
    assert abs(total_count - total_n * p) <= 5 * math.sqrt(total_n * p * (1 - p))


@pytest.mark.parametrize("mode", ["batch", "row"])
@pytest.mark.parametrize("p", [0, 1])
def test_stochastic_depth_zero_and_one(p, mode):
    x = torch.ones(5, 3, 4, 4)
    for seed in range(10):
        torch.manual_seed(seed)
        out = dk.StochasticDepth(p=p, mode=mode)(x)
        if p == 0:
            assert out is x
        else:
            assert torch.equal(out, torch.zeros_like(x))
    layer = dk.StochasticDepth(0.7, mode).eval()
    assert layer(x) is x
    assert dk.stochastic_depth(x, 0.7, mode, training=False) is x
    assert dk.stochastic_depth(x, 0.0, mode) is x


def test_stochastic_depth_functional_is_drop_path():
    x = torch.randn(16, 3, 5)
    for mode in ("row", "batch"):
        torch.manual_seed(3)
        a = dk.stochastic_depth(x, 0.4, mode)
        torch.manual_seed(3)
        assert torch.equal(a, dk.drop_path(x, 0.4, mode=mode))
        torch.manual_seed(3)
        assert torch.equal(a, dk.StochasticDepth(0.4, mode)(x))
    torch.manual_seed(3)
    a = dk.stochastic_depth(input=x, p=0.4, mode="row", training=True)
    torch.manual_seed(3)
    assert torch.equal(a, dk.DropPath(drop_prob=0.4)(x))


def test_stochastic_depth_errors_are_torchvisions():
    x = torch.ones(4, 3)
    for call in (
        lambda: dk.StochasticDepth(1.5, "row"),
        lambda: dk.StochasticDepth(-0.1, "batch"),
        lambda: dk.StochasticDepth(0.5, "col"),
        lambda: dk.stochastic_depth(x, 1.5, "row"),
        lambda: dk.stochastic_depth(x, 0.5, "col", training=False),  # checked in eval too
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError, match="mode"):
        dk.StochasticDepth(0.5)  # required, as in torchvision


def test_mc_dropout_sees_stochastic_depth():
    model = nn.Sequential(nn.Linear(4, 3), dk.StochasticDepth(0.5, "batch"))
    assert dk.mc.is_dropout(model[1])
    assert dk.mc.enable(model) == [model[1]] and model[1].training and not model[0].training
    with pytest.raises(ValueError, match="StochasticDepth"):  # one mask for the whole batch
        dk.mc.predict(model, torch.randn(2, 4), samples=4, batch_size=8)
    row = nn.Sequential(nn.Linear(4, 3), dk.StochasticDepth(0.5, "row"))
    assert dk.mc.predict(row, torch.randn(2, 4), samples=4, batch_size=8).mean.shape == (2, 3)


# ------------------------------------------ torch.fx: one leaf node, as torchvision's
class _Calls(nn.Module):
    """Calls the layer and returns nothing, like the wrappers of torchvision's fx tests."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, a):
        self.layer(a)


LAYERS = [
    (lambda: dk.StochasticDepth(0.5, "row"), (4, 3, 5), F.drop_path),
    (lambda: dk.StochasticDepth(1, "batch"), (4, 3, 5), F.drop_path),
    (lambda: dk.DropPath(drop_prob=0.3), (4, 7), F.drop_path),
    (lambda: dk.DropBlock2d(0.3, 5, True), (2, 3, 9, 9), F.drop_block2d),
    (lambda: dk.DropBlock3d(1, 7, False), (2, 3, 7, 7, 7), F.drop_block3d),
]


@pytest.mark.parametrize("make,shape,functional", LAYERS)
def test_fx_traces_the_functional_as_one_node(make, shape, functional):
    for training in (True, False):  # torchvision's get_graph_node_names traces both
        graph = torch.fx.Tracer().trace(_Calls(make()).train(training))
        nodes = [n for n in graph.nodes if n.op != "output"]
        assert [n.op for n in nodes] == ["placeholder", "call_function"]
        assert nodes[1].target is functional
    layer = make()
    traced = torch.fx.symbolic_trace(layer)
    x = torch.randn(shape)
    torch.manual_seed(0)
    expected = layer(x.clone())
    torch.manual_seed(0)
    assert torch.equal(traced(x.clone()), expected)


# --------------------------------------------------- isinstance, pickle, state_dict, repr
CONFIGURED = [
    (lambda: dk.StochasticDepth(0.2, "batch"), "StochasticDepth(p=0.2, mode='batch')"),
    (lambda: dk.DropPath(drop_prob=0.1, scale_by_keep=False),
     "DropPath(p=0.1, scale_by_keep=False, mode='row')"),
    (lambda: dk.DropBlock2d(0.3, 5, True, 1e-3),
     "DropBlock2d(p=0.3, block_size=(5, 5), inplace=True, eps=0.001, scale_by_keep=True)"),
    (lambda: dk.DropBlock3d(p=0.2, block_size=3, scale_by_keep=False),
     "DropBlock3d(p=0.2, block_size=(3, 3, 3), inplace=False, eps=1e-06, scale_by_keep=False)"),
]


@pytest.mark.parametrize("make,expected_repr", CONFIGURED)
def test_config_survives_pickle_copy_and_state_dict(make, expected_repr):
    m = make()
    assert repr(m) == expected_repr
    assert m.state_dict() == {} and list(m.parameters()) == [] and list(m.buffers()) == []
    for clone in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert type(clone) is type(m) and repr(clone) == expected_repr
        assert clone.__dict__.keys() == m.__dict__.keys()
    fresh = make()
    fresh.load_state_dict(m.state_dict())
    assert repr(fresh) == expected_repr


def test_isinstance():
    assert issubclass(dk.StochasticDepth, dk.DropPath)
    assert all(dk.mc.is_dropout(make()) for make, _ in CONFIGURED)


# ---------------------------------------------------------------- torch.compile
@pytest.mark.slow  # compilation: several seconds per layer on 2 cores
@pytest.mark.parametrize(
    "make,shape",
    [
        (lambda: dk.StochasticDepth(0.5, "row"), (16, 3, 4)),
        (lambda: dk.DropPath(drop_prob=0.5), (16, 3, 4)),
        (lambda: dk.DropBlock2d(0.3, 3, inplace=True), (2, 3, 8, 8)),
    ],
)
def test_fullgraph_compile(make, shape):
    torch._dynamo.reset()
    module = make()
    compiled = torch.compile(module, fullgraph=True)
    x = torch.ones(shape)
    torch.manual_seed(0)
    a, b = compiled(x.clone()), compiled(x.clone())
    assert a.shape == x.shape and not torch.equal(a, b)  # a fresh mask per call
    torch.manual_seed(0)
    assert torch.equal(compiled(x.clone()), a)  # torch.manual_seed governs it
    if module.__dict__.get("inplace"):
        y = x.clone()
        assert compiled(y) is y and not torch.equal(y, x)  # written into the input
    module.eval()
    assert torch.equal(compiled(x), x)
