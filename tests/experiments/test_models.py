"""Models, regularizers and where dropout sits in each network."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit.experiments import models, regularizers
from dropkit.experiments.models import _ClassicScale


def _reg(name):
    return regularizers.get(name)


@pytest.mark.parametrize("model", ["tutorial-mlp", "wide-mlp", "cnn1d", "resmlp"])
@pytest.mark.parametrize("reg", ["none", "dropout", "dropout-classic", "l2", "dropout+maxnorm"])
def test_every_model_builds_and_classifies(model, reg):
    torch.manual_seed(0)
    net = models.build_model(model, 40, 10, _reg(reg), 0.3)
    x = torch.randn(8, 40)
    assert net(x).shape == (8, 10)
    net.eval()
    assert torch.equal(net(x), net(x))  # deterministic at test time
    has_dropout = any(isinstance(m, dk.Dropout | dk.Dropout1d) for m in net.modules())
    assert has_dropout == (reg.startswith("dropout"))


def test_dropout_is_active_in_training_only():
    torch.manual_seed(0)
    net = models.build_model("wide-mlp", 40, 10, _reg("dropout"), 0.5).train()
    x = torch.randn(8, 40)
    assert not torch.equal(net(x), net(x))


def test_classic_channel_dropout_scales_at_test_time():
    layer = _ClassicScale(dk.Dropout1d(0.25), 0.25).eval()
    x = torch.randn(4, 3, 10)
    torch.testing.assert_close(layer(x), x * 0.75)
    layer.train()
    torch.manual_seed(0)
    y = layer(x)
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept])  # train: x * m, no rescaling


def test_droppath_needs_the_residual_model():
    net = models.build_model("resmlp", 40, 10, _reg("droppath"), 0.3)
    rates = [b.drop_path.p for b in net.blocks if isinstance(b.drop_path, dk.DropPath)]
    assert rates == pytest.approx(dk.drop_path_rates(4, 0.3)[1:])
    with pytest.raises(ValueError, match="resmlp"):
        models.build_model("wide-mlp", 40, 10, _reg("droppath"), 0.3)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="tutorial-mlp, wide-mlp, cnn1d, resmlp"):
        models.get("mlp")
    with pytest.raises(ValueError, match="none, dropout, dropout-classic, l2, l1"):
        regularizers.get("dropconnect")


def test_max_norm_projects_incoming_weights_only_when_too_long():
    lin = nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[3.0, 4.0, 0.0], [0.1, 0.0, 0.0]]))
    regularizers.apply_max_norm(lin, 2.0)
    torch.testing.assert_close(lin.weight.norm(dim=1), torch.tensor([2.0, 0.1]), rtol=1e-4, atol=0)


def test_penalties_act_on_weights_not_biases():
    net = nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2))
    with torch.no_grad():
        net[0].weight.fill_(-1.0)
        net[0].bias.fill_(5.0)
    assert regularizers.l1_penalty(net).item() == 4.0
    decay, rest = regularizers.param_groups(net, 1e-3)
    assert decay["params"] == [net[0].weight] and rest["weight_decay"] == 0.0
