"""The family layers trace under torch.compile(fullgraph=True) with fresh masks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import dropkit as dk


@pytest.mark.slow  # compilation: several seconds per layer on 2 cores
@pytest.mark.parametrize(
    "make,x",
    [
        (lambda: dk.DropBlock2d(0.2, 3), torch.ones(2, 3, 8, 8)),
        (lambda: dk.LockedDropout(0.3), torch.ones(4, 2, 5)),
        (lambda: dk.AlphaDropout(0.2), torch.randn(64)),
        (lambda: dk.FeatureAlphaDropout(0.2), torch.randn(8, 16, 3)),
        (lambda: dk.Dropout(0.5), torch.randn(2, 3, 4, 5).to(memory_format=torch.channels_last)),
        (lambda: dk.Dropout2d(0.5), torch.randn(4, 8, 3, 3)),
        (lambda: dk.EmbeddingDropout(nn.Embedding(50, 3), 0.3), torch.arange(50)),
        (lambda: dk.GaussianDropout(0.2), torch.ones(64)),
        (lambda: dk.ConcreteDropout(0.2), torch.ones(4, 16)),
    ],
)
def test_fullgraph_compile_draws_fresh_masks(make, x):
    torch._dynamo.reset()
    module = make()
    compiled = torch.compile(module, fullgraph=True)
    a, b = compiled(x), compiled(x)
    assert a.shape == module(x).shape and a.stride() == module(x).stride()
    assert not torch.equal(a, b)  # the seed is drawn inside the graph, not baked in
    torch.manual_seed(0)
    c = compiled(x)
    torch.manual_seed(0)
    assert torch.equal(c, compiled(x))  # and torch.manual_seed still governs it
