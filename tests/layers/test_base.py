"""dk.DropoutLayer: the one base of the dropout family, and what it tells dk.mc.

Every layer dropkit exports derives from it; the six drop-ins for torch's
classes stay exactly torch's (state, repr, pickles); and each layer's
``shares_mask_across_batch`` is checked against what the layer does: a batch
of identical rows comes out identical iff one mask serves the whole batch.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import dropkit as dk
import dropkit.layers

EXPORTED = list(dict.fromkeys(
    getattr(dropkit.layers, name)
    for name in dropkit.layers.__all__
    if isinstance(getattr(dropkit.layers, name), type)
    and issubclass(getattr(dropkit.layers, name), nn.Module)
))

TORCH_DROP_INS = ["Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
                  "FeatureAlphaDropout"]

ROWS = 64  # identical rows; 64 independent p=0.5 draws are all equal with chance 2**-63


def _same_rows(shape):
    return lambda: torch.randn((1,) + shape).expand((ROWS,) + shape).contiguous()


def _call(x):
    return lambda m: m(x())


# class -> (a layer of it at p = 0.5, how to run it on ROWS identical rows, shares a mask?)
CASES = {
    dk.Dropout: (lambda: dk.Dropout(0.5), _call(_same_rows((16,))), False),
    dk.Dropout1d: (lambda: dk.Dropout1d(0.5), _call(_same_rows((8, 4))), False),
    dk.Dropout2d: (lambda: dk.Dropout2d(0.5), _call(_same_rows((8, 2, 2))), False),
    dk.Dropout3d: (lambda: dk.Dropout3d(0.5), _call(_same_rows((8, 2, 2, 2))), False),
    dk.AlphaDropout: (lambda: dk.AlphaDropout(0.5), _call(_same_rows((16,))), False),
    dk.FeatureAlphaDropout: (
        lambda: dk.FeatureAlphaDropout(0.5), _call(_same_rows((8, 2, 2))), False),
    dk.GaussianDropout: (lambda: dk.GaussianDropout(0.5), _call(_same_rows((16,))), False),
    dk.DropPath: (lambda: dk.DropPath(0.5), _call(_same_rows((4,))), False),
    dk.StochasticDepth: (lambda: dk.StochasticDepth(0.5, "row"), _call(_same_rows((4,))), False),
    dk.ResidualDropPath: (
        lambda: dk.ResidualDropPath(nn.Linear(4, 4), 0.5), _call(_same_rows((4,))), False),
    dk.BiasDropoutAdd: (
        lambda: dk.BiasDropoutAdd(0.5),
        lambda m: m(_same_rows((16,))(), torch.randn(16), torch.zeros(ROWS, 16)),
        False,
    ),
    dk.DropBlock2d: (lambda: dk.DropBlock2d(0.5, 2), _call(_same_rows((2, 6, 6))), False),
    dk.DropBlock3d: (lambda: dk.DropBlock3d(0.5, 2), _call(_same_rows((2, 4, 4, 4))), False),
    dk.LockedDropout: (
        lambda: dk.LockedDropout(0.5, batch_first=True), _call(_same_rows((3, 8))), False),
    dk.ConcreteDropout: (lambda: dk.ConcreteDropout(0.5), _call(_same_rows((16,))), False),
    dk.EmbeddingDropout: (
        lambda: dk.EmbeddingDropout(nn.Embedding(50, 4), 0.5),
        lambda m: m(torch.randint(0, 50, (1, 20)).expand(ROWS, 20)),
        True,
    ),
    dk.WeightDrop: (
        lambda: dk.WeightDrop(nn.Linear(16, 8), p=0.5), _call(_same_rows((16,))), True),
}
BATCH_MODE = {  # the same classes in mode="batch": one decision for the batch
    dk.DropPath: lambda: dk.DropPath(0.5, mode="batch"),
    dk.StochasticDepth: lambda: dk.StochasticDepth(0.5, "batch"),
    dk.ResidualDropPath: lambda: dk.ResidualDropPath(nn.Linear(4, 4), 0.5, mode="batch"),
}


def test_every_exported_layer_derives_from_the_base():
    assert len(EXPORTED) >= 16
    for cls in EXPORTED:
        assert issubclass(cls, dk.DropoutLayer), cls
    assert dk.DropoutLayer is dropkit.layers.DropoutLayer
    assert "DropoutLayer" in dk.__all__ and "DropoutLayer" in dropkit.layers.__all__
    # and every one of them has its case below
    assert set(EXPORTED) - {dk.DropoutLayer} == set(CASES)


@pytest.mark.parametrize("name", TORCH_DROP_INS)
def test_drop_ins_stay_torchs_classes_with_torchs_state(name):
    ours, theirs = getattr(dk, name), getattr(nn, name)
    m, t = ours(0.3, True), theirs(0.3, True)
    assert isinstance(m, theirs) and isinstance(m, dk.DropoutLayer)
    # torch's class comes first: its methods win wherever the base could say something
    assert ours.__mro__.index(theirs) < ours.__mro__.index(dk.DropoutLayer)
    extra = {"inverted"} if name == "Dropout" else set()
    assert set(vars(m)) == set(vars(t)) | extra
    assert m.state_dict() == t.state_dict() == {}
    if name != "Dropout":
        assert repr(m) == repr(t)
    clone = pickle.loads(pickle.dumps(m))
    assert type(clone) is ours and vars(clone).keys() == vars(m).keys()


def test_the_base_adds_no_state_or_behaviour():
    own = {k for k in vars(dk.DropoutLayer) if not k.startswith("__")}
    assert own == {"shares_mask_across_batch"}
    for hook in ("__init__", "forward", "extra_repr", "__getstate__", "__setstate__"):
        assert hook not in vars(dk.DropoutLayer), hook


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_every_layer_has_a_rate(cls):
    make, _, _ = CASES[cls]
    assert make().p == pytest.approx(0.5)


@pytest.mark.parametrize("cls", list(CASES), ids=lambda c: c.__name__)
def test_shares_mask_across_batch_is_what_the_layer_does(cls):
    torch.manual_seed(0)
    make, run, shares = CASES[cls]
    layer = make().train()
    assert layer.shares_mask_across_batch is shares
    y = run(layer)
    rows_equal = bool((y == y[:1]).all())
    assert rows_equal is shares


@pytest.mark.parametrize("cls", list(BATCH_MODE), ids=lambda c: c.__name__)
def test_batch_mode_shares_its_mask(cls):
    torch.manual_seed(0)
    layer = BATCH_MODE[cls]().train()
    assert layer.shares_mask_across_batch is True
    _, run, _ = CASES[cls]
    outs = [run(layer) for _ in range(8)]
    assert all(bool((y == y[:1]).all()) for y in outs)
    layer.mode = "row"  # the property follows the configuration
    assert layer.shares_mask_across_batch is False


def test_a_users_layer_derived_from_the_base_is_dropout_for_mc():
    class Noise(dk.DropoutLayer):
        def __init__(self, p: float) -> None:
            super().__init__()
            self.p = p

        def forward(self, x):
            return x + self.p * torch.randn_like(x) if self.training else x

    layer = Noise(0.1)
    assert dk.mc.is_dropout_layer(layer) and layer.shares_mask_across_batch is False
    model = nn.Sequential(nn.Linear(4, 3), layer).eval()
    pred = dk.mc.predict(model, torch.randn(5, 4), samples=4, batch_size=20)
    assert (pred.mutual_information > 0).all()
    assert dk.DropoutSchedule(model, "late", 2).rates() == {"1": 0.0}
