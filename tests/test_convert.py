"""dk.convert / dk.revert: torch's dropout modules to dropkit's and back."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

import dropkit as dk

TORCH_TYPES = (
    nn.Dropout,
    nn.Dropout1d,
    nn.Dropout2d,
    nn.Dropout3d,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)
NAMES = [cls.__name__ for cls in TORCH_TYPES]
# input shapes each layer accepts without a warning
SHAPES = {
    "Dropout": (4, 6),
    "Dropout1d": (4, 6, 5),
    "Dropout2d": (4, 6, 5, 5),
    "Dropout3d": (4, 6, 3, 3, 3),
    "AlphaDropout": (4, 6),
    "FeatureAlphaDropout": (4, 6, 5, 5),
}


def _names_param():
    params = []
    for name in NAMES:
        marks = []
        if not hasattr(dk.layers, name):
            marks = pytest.mark.skip(
                reason=f"dropkit.{name} does not exist yet (added by a parallel change); "
                f"dk.convert leaves nn.{name} as it is until it does"
            )
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def _dropkit_types():
    return tuple(getattr(dk.layers, name) for name in NAMES if hasattr(dk.layers, name))


def _settings(m: nn.Module) -> tuple:
    return (m.p, getattr(m, "inplace", False), m.training)


def _torch_record(model: nn.Module) -> dict[str, tuple]:
    """Path -> (class name, p, inplace, training) of every exact torch dropout module."""
    return {
        path: (type(m).__name__, *_settings(m))
        for path, m in model.named_modules()
        if type(m) in TORCH_TYPES
    }


def _dropkit_record(model: nn.Module) -> dict[str, tuple]:
    return {
        path: (type(m).__name__, *_settings(m))
        for path, m in model.named_modules()
        if type(m) in _dropkit_types()
    }


class _Net(nn.Module):
    """A transformer encoder (2 layers) inside nested containers of every kind."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 16)
        layer = nn.TransformerEncoderLayer(
            d_model=16, nhead=2, dim_feedforward=32, dropout=0.1, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Linear(16, 16), nn.Dropout(0.3, inplace=True)),
                nn.ModuleDict(
                    {
                        "channel1d": nn.Dropout1d(0.2),
                        "channel2d": nn.Dropout2d(0.25),
                        "channel3d": nn.Dropout3d(0.15),
                    }
                ),
            ]
        )
        self.head = nn.Sequential(nn.Linear(16, 16), nn.SELU(), nn.AlphaDropout(0.05))
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, S=5, 6)
        h = self.encoder(self.embed(x))
        h = self.blocks[0](h)
        channels = self.blocks[1]
        h = channels["channel1d"](h)  # (N, C=S, L=16)
        h = channels["channel2d"](h.unsqueeze(-1)).squeeze(-1)
        h = channels["channel3d"](h[..., None, None]).squeeze(-1).squeeze(-1)
        return self.out(self.head(h)).mean(1)


def _net() -> _Net:
    torch.manual_seed(0)
    return _Net()


def _x() -> torch.Tensor:
    return torch.randn(4, 5, 6, generator=torch.Generator().manual_seed(1))


def test_convert_replaces_every_torch_dropout_with_same_settings():
    model = _net().train()
    model.encoder.layers[1].eval()  # a mixed training flag must survive
    before = _torch_record(model)
    assert len(before) == 2 * 3 + 5  # dropout, dropout1, dropout2 per encoder layer; 5 more
    assert {path for path, rec in before.items() if not rec[3]} == {
        "encoder.layers.1.dropout",
        "encoder.layers.1.dropout1",
        "encoder.layers.1.dropout2",
    }
    old_modules = dict(model.named_modules())

    out = dk.convert(model)

    assert out is model
    assert _torch_record(model) == {}
    after = _dropkit_record(model)
    assert len(after) == len(before)
    for path, (name, p, inplace, training) in before.items():
        new = model.get_submodule(path)
        assert type(new) is getattr(dk.layers, name)
        assert new is not old_modules[path]
        assert new.p == p and new.training == training
        if "inplace" in inspect.signature(type(new)).parameters:
            assert new.inplace == inplace
    assert model.blocks[0][1].inplace is True
    # attention dropout is a float handed to a functional, not a module: unreachable
    assert isinstance(model.encoder.layers[0].self_attn.dropout, float)


def test_convert_keeps_state_dict_and_eval_outputs():
    model = _net().eval()
    x = _x()
    keys = list(model.state_dict())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        expected = model(x)

    dk.convert(model)

    assert list(model.state_dict()) == keys
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    with torch.no_grad():
        assert torch.equal(model(x), expected)  # dropout is the identity in eval


def test_converted_model_trains():
    model = dk.convert(_net()).train()
    x = _x()
    torch.manual_seed(2)
    y1 = model(x)
    y1.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    with torch.no_grad():
        y2 = model(x)
    assert not torch.equal(y1.detach(), y2)  # fresh masks per call


def test_revert_and_round_trip():
    model = _net().train()
    model.encoder.layers[0].eval()
    before = _torch_record(model)
    dropkit_before = dict(model.named_modules())

    dk.convert(model)
    assert dk.revert(model) is model

    assert _dropkit_record(model) == {}
    after = _torch_record(model)
    supports_inplace = {
        name: "inplace" in inspect.signature(getattr(dk.layers, name)).parameters
        for name in NAMES
        if hasattr(dk.layers, name)
    }
    assert after.keys() == before.keys()
    for path, (name, p, inplace, training) in before.items():
        assert after[path][:2] == (name, p) and after[path][3] == training
        if supports_inplace[name]:
            assert after[path][2] == inplace
        assert model.get_submodule(path) is not dropkit_before[path]
    # and again: convert after revert
    dk.convert(model)
    assert _torch_record(model) == {}


@pytest.mark.parametrize("name", _names_param())
def test_each_type_both_ways(name):
    torch_cls, dropkit_cls = getattr(nn, name), getattr(dk.layers, name)
    old = torch_cls(0.3, inplace=True).eval()
    model = nn.Sequential(nn.Identity(), old)
    x = torch.randn(*SHAPES[name])

    dk.convert(model)
    new = model[1]
    assert type(new) is dropkit_cls
    assert (new.p, new.training) == (0.3, False)
    takes_inplace = "inplace" in inspect.signature(dropkit_cls).parameters
    if takes_inplace:
        assert new.inplace is True
    assert torch.equal(model(x), x)
    model.train()
    assert model(x).shape == x.shape

    dk.revert(model)
    back = model[1]
    assert type(back) is torch_cls
    assert (back.p, back.training, back.inplace) == (0.3, True, takes_inplace)


def test_top_level_dropout_module():
    old = nn.Dropout(0.3, inplace=True).eval()
    new = dk.convert(old)
    assert type(new) is dk.Dropout
    assert (new.p, new.inplace, new.training) == (0.3, True, False)
    assert type(old) is nn.Dropout  # the argument itself is left as it was

    back = dk.revert(new)
    assert type(back) is nn.Dropout
    assert (back.p, back.inplace, back.training) == (0.3, True, False)


def test_shared_instance_maps_to_one_instance():
    shared = nn.Dropout(0.2)
    model = nn.Sequential(
        nn.Linear(4, 4),
        shared,
        nn.Linear(4, 4),
        shared,  # twice in the same parent: named_children() yields it once
        nn.ModuleDict({"a": nn.Sequential(shared), "b": nn.ModuleList([shared])}),
    )
    dk.convert(model)
    new = model[1]
    assert type(new) is dk.Dropout
    assert model[3] is new and model[4]["a"][0] is new and model[4]["b"][0] is new

    dk.revert(model)
    back = model[1]
    assert type(back) is nn.Dropout
    assert model[3] is back and model[4]["a"][0] is back and model[4]["b"][0] is back


def test_shared_container_converted_once():
    block = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    model = nn.ModuleList([block, block])
    dk.convert(model)
    assert model[0] is model[1] is block
    assert type(block[1]) is dk.Dropout


def test_subclasses_and_dropkit_layers_untouched():
    class MyDropout(nn.Dropout):
        pass

    mine = MyDropout(0.4)
    ours = [
        dk.Dropout(0.2),
        dk.Dropout(0.2, inverted=False),
        dk.AlphaDropout(0.1),
        dk.GaussianDropout(0.1),
        dk.DropPath(0.1),
        dk.Dropout2d(0.1),
    ]
    model = nn.Sequential(mine, *ours)
    dk.convert(model)
    assert model[0] is mine
    assert all(model[i + 1] is m for i, m in enumerate(ours))

    class MyDkDropout(dk.Dropout):
        pass

    mine_dk = MyDkDropout(0.3)
    model = nn.Sequential(mine_dk, mine, dk.GaussianDropout(0.1))
    dk.revert(model)
    assert model[0] is mine_dk and model[1] is mine
    assert type(model[2]) is dk.GaussianDropout


def test_revert_leaves_classic_dropout_or_raises_when_strict():
    classic = dk.Dropout(0.2, inverted=False)
    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(dk.Dropout(0.1), classic))
    dk.revert(model)
    assert model[1][1] is classic
    assert type(model[1][0]) is nn.Dropout

    model = nn.Sequential(nn.Linear(4, 4), nn.Sequential(dk.Dropout(0.1), classic))
    with pytest.raises(ValueError, match=r"'1\.1'.*inverted=False"):
        dk.revert(model, strict=True)
    with pytest.raises(ValueError, match="top-level"):
        dk.revert(classic, strict=True)
    assert dk.revert(classic) is classic


def test_hooks_are_not_carried_over():
    old = nn.Dropout(0.1)
    old.register_forward_hook(lambda *args: None)
    model = dk.convert(nn.Sequential(old))
    assert len(model[0]._forward_hooks) == 0


def test_dropkit_classes_looked_up_at_call_time(monkeypatch):
    class StandIn(nn.Module):  # a constructor without `inplace`, like dk.AlphaDropout's
        def __init__(self, p: float = 0.5) -> None:
            super().__init__()
            self.p = p

    monkeypatch.setattr(dk.layers, "FeatureAlphaDropout", StandIn, raising=False)
    model = dk.convert(nn.Sequential(nn.FeatureAlphaDropout(0.2, inplace=True).eval()))
    assert type(model[0]) is StandIn
    assert (model[0].p, model[0].training) == (0.2, False)
    dk.revert(model)
    assert type(model[0]) is nn.FeatureAlphaDropout
    assert (model[0].p, model[0].inplace, model[0].training) == (0.2, False, False)
