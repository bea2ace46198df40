"""dk.DropPath / dk.StochasticDepth modules."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

import dropkit as dk


def test_stochastic_depth_is_a_drop_path_and_repr():
    sd = dk.StochasticDepth(0.2, "batch")
    assert isinstance(sd, dk.DropPath) and type(sd) is not dk.DropPath
    assert repr(sd) == "StochasticDepth(p=0.2, mode='batch')"
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
    # In training the last path drops whole samples: Binomial(n, 0.3) of n, within 5
    # standard deviations, so a DropPath that drops nothing (or everything) fails.
    n = 4096
    out = paths[-1](torch.ones(n, 197, 8)).reshape(n, -1)
    dropped = (out == 0).all(1)
    assert (dropped | (out == 1 / 0.7).all(1)).all()
    p = paths[-1].p
    assert abs(dropped.sum().item() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    assert paths[0](torch.ones(n, 3)).eq(1).all()  # rate 0: the first block keeps everything
    paths.eval()
    h_eval = x
    for block, path in zip(blocks, paths, strict=True):
        assert path(h_eval) is h_eval
        h_eval = h_eval + path(block(h_eval))


def test_module_zeroes_samples():
    torch.manual_seed(1)
    p, n = 0.5, 256
    m = dk.DropPath(p)
    y = m(torch.ones(n, 3, 4, 4))
    per_sample = y.reshape(n, -1)
    dropped = (per_sample == 0).all(1)
    # every sample is either zeroed or kept whole and scaled by 1/(1-p) ...
    assert (dropped | (per_sample == 2).all(1)).all()
    # ... and the zeroed count is Binomial(n, p): within 5 standard deviations
    # (a false alarm about once in 1.7 million runs), so neither "nothing
    # dropped" nor "everything dropped" passes.
    assert abs(dropped.sum().item() - n * p) <= 5 * math.sqrt(n * p * (1 - p))
