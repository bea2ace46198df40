"""dk.DropPath / dk.StochasticDepth modules."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

import dropkit as dk


def test_alias_and_repr():
    assert dk.StochasticDepth is dk.DropPath
    m = dk.DropPath(0.1, scale_by_keep=False, mode="batch")
    assert repr(m) == "DropPath(p=0.1, scale_by_keep=False, mode='batch')"
    assert list(m.parameters()) == [] and m.state_dict() == {}
    assert pickle.loads(pickle.dumps(m)).mode == "batch"


def test_residual_block_with_linear_schedule():
    torch.manual_seed(0)
    rates = dk.drop_path_rates(4, 0.3)
    blocks = nn.ModuleList(nn.Linear(8, 8) for _ in rates)
    paths = nn.ModuleList(dk.DropPath(r) for r in rates)
    x = torch.randn(64, 197, 8)
    h = x
    for block, path in zip(blocks, paths, strict=True):
        h = h + path(block(h))
    h.sum().backward()
    assert paths[0].p == 0.0 and paths[-1].p == pytest.approx(0.3)
    paths.eval()
    h_eval = x
    for block, path in zip(blocks, paths, strict=True):
        assert path(h_eval) is h_eval
        h_eval = h_eval + path(block(h_eval))


def test_module_zeroes_samples():
    torch.manual_seed(1)
    m = dk.DropPath(0.5)
    y = m(torch.ones(256, 3, 4))
    per_sample = y.reshape(256, -1)
    assert ((per_sample == 0).all(1) | (per_sample == 2).all(1)).all()
