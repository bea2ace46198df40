"""dk.ResidualDropPath and dk.BiasDropoutAdd: thin holders of the fused functionals."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import dropkit as dk
from dropkit import functional as F


class _RowWise(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d)
        self.gain = nn.Parameter(torch.linspace(-1.0, 2.0, d))

    def forward(self, x):
        return torch.tanh(self.norm(x) * self.gain) + 0.1


def _seeded(seed, fn, *args):
    torch.manual_seed(seed)
    return fn(*args)


def test_residual_drop_path_module():
    branch = _RowWise(8)
    block = dk.ResidualDropPath(branch, 0.25)
    assert "p=0.25, scale_by_keep=True, mode='row'" in repr(block)
    assert set(block.state_dict()) == {"branch.norm.weight", "branch.norm.bias", "branch.gain"}
    x = torch.randn(40, 8)
    assert torch.equal(_seeded(2, block, x), _seeded(2, lambda: x + dk.drop_path(branch(x), 0.25)))
    block.eval()
    assert torch.equal(block(x), x + branch(x))
    with pytest.raises(ValueError, match="BatchNorm"):
        dk.ResidualDropPath(nn.BatchNorm1d(8), 0.1)
    with pytest.raises(TypeError, match="nn.Module"):
        dk.ResidualDropPath(lambda t: t, 0.1)
    assert F.residual_drop_path is dk.residual_drop_path


def test_bias_dropout_add_module():
    module = dk.BiasDropoutAdd(0.1)
    assert repr(module) == "BiasDropoutAdd(p=0.1)" and module.state_dict() == {}
    assert pickle.loads(pickle.dumps(module)).p == 0.1
    x, bias, residual = torch.randn(4, 8), torch.randn(8), torch.randn(4, 8)
    assert torch.equal(_seeded(1, module, x, bias, residual),
                       _seeded(1, lambda: residual + dk.dropout(x + bias, 0.1)))
    module.eval()
    assert torch.equal(module(x, bias, residual), residual + (x + bias))
    with pytest.raises(ValueError, match="p=-0.1"):
        dk.BiasDropoutAdd(-0.1)


def test_residual_blocks_with_a_linear_schedule_train():
    torch.manual_seed(0)
    rates = dk.drop_path_rates(4, 0.3)
    blocks = nn.Sequential(*(dk.ResidualDropPath(
        nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)), r)
        for r in rates))
    x = torch.randn(64, 10, 8)
    blocks(x).sum().backward()
    assert blocks[0].p == 0.0 and blocks[-1].p == pytest.approx(0.3)
    assert all(p.grad is not None for p in blocks.parameters())
