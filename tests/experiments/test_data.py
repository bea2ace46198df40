"""The data loaders: real MNIST-1D (regenerated, cached, regenerated when corrupt) and digits."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from dropkit.experiments import data


@pytest.mark.slow
def test_mnist1d_is_generated_cached_and_regenerated_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPKIT_CACHE", str(tmp_path))
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    d = data.load("mnist1d")
    # generating the data must not reseed anyone else's global generators
    assert (np.random.get_state()[1] == np_before).all() and random.getstate() == py_before

    assert d.x_train.shape == (4000, 40) and d.x_test.shape == (1000, 40)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert set(d.y_train.tolist()) == set(range(10)) and d.n_classes == 10
    # standardised with the training split's per-feature mean and std
    assert d.x_train.mean(0).abs().max() < 1e-4
    assert (d.x_train.std(0) - 1).abs().max() < 1e-2

    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    again = data.load("mnist1d")  # from the cache: the same tensors
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)

    cached[0].write_bytes(b"not an npz file")  # corrupt: regenerated, same data
    assert torch.equal(data.load("mnist1d").x_test, d.x_test)
    assert data._read_cache(cached[0]) is not None

    # a cache whose arrays were altered fails its checksum
    with np.load(cached[0]) as f:
        arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
        checksum = f["checksum"]
    arrays["y"] = arrays["y"].copy()
    arrays["y"][0] = (arrays["y"][0] + 1) % 10
    np.savez(cached[0], checksum=checksum, **arrays)
    assert data._read_cache(cached[0]) is None


def test_digits_is_a_fixed_stratified_split():
    d = data.load("digits")
    assert d.x_train.shape == (1347, 64) and d.x_test.shape == (450, 64)
    assert d.n_classes == 10
    train_freq = torch.bincount(d.y_train, minlength=10) / len(d.y_train)
    test_freq = torch.bincount(d.y_test, minlength=10) / len(d.y_test)
    assert (train_freq - test_freq).abs().max() < 0.01
    assert d.x_train.mean(0).abs().max() < 1e-4
    assert torch.isfinite(d.x_test).all()  # constant pixels do not divide by zero
    assert torch.equal(data.load("digits").x_test, d.x_test)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(ValueError, match="Choose one of: mnist1d, digits"):
        data.load("mnist2d")


def test_subset_is_stratified_and_seeded(tiny):
    d = data.load("tiny")
    a, b, c = d.subset(0.5, seed=0), d.subset(0.5, seed=0), d.subset(0.5, seed=1)
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    assert abs(len(a.y_train) - 80) <= 4
    full = torch.bincount(d.y_train, minlength=4).float()
    half = torch.bincount(a.y_train, minlength=4).float()
    assert ((half / full) - 0.5).abs().max() < 0.05
    assert a.subset is not None and d.subset(1.0, 0) is d
    with pytest.raises(ValueError, match="fraction"):
        d.subset(0.0, 0)
