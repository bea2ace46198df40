"""Shared fixtures: a tiny synthetic data set, so that whole experiments run in seconds."""

from __future__ import annotations

import pytest
import torch

from dropkit.experiments import data


def tiny_dataset() -> data.Dataset:
    """Four Gaussian blobs in 24 dimensions: 160 train / 80 test."""
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 24, generator=g) * 1.5
    y = torch.randint(0, 4, (240,), generator=g)
    x = centres[y] + torch.randn(240, 24, generator=g)
    return data.Dataset("tiny", x[:160], y[:160], x[160:], y[160:], 4, "four blobs")


data.register_dataset("tiny", tiny_dataset)

#: options that make any experiment finish in about a second
TINY = {
    "workers": 1, "dataset": "tiny", "epochs": 2, "seeds": [0, 1], "batch_size": 32, "threads": 1
}


@pytest.fixture
def tiny() -> dict:
    return dict(TINY)
