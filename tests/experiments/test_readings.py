"""The plain-language readings are computed from the numbers, and MC averaging's loop."""

from __future__ import annotations

import torch
from torch import nn

import dropkit as dk
from dropkit.experiments.mc_averaging import MCAveraging, mc_predict
from dropkit.experiments.sweep_p import sweep_reading


def _run(reg, seed, train, test, p=0.0, model="wide-mlp"):
    return {
        "dataset": "d",
        "model": model,
        "regularizer": reg,
        "p": p,
        "seed": seed,
        "train_acc": train,
        "test_acc": test,
        "gap": train - test,
        "test_loss": 1.0 - test,
    }


def test_sweep_reading_finds_the_peak():
    accs = {0.0: 0.65, 0.2: 0.69, 0.5: 0.66, 0.9: 0.40}
    records = [
        _run("dropout", s, 1.0 - p / 2, a + 0.001 * s, p=p)
        for p, a in accs.items()
        for s in range(2)
    ]
    text = sweep_reading(records)[0]
    assert "peaks at p = 0.2" in text and "U shape" in text and "% at p = 0.9: the U shape" in text


def test_mc_predict_averages_stochastic_passes_and_restores_modes():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), dk.Dropout(0.5), nn.Linear(16, 3)
    )
    net.train()
    x = torch.randn(32, 6)
    net.eval()
    running = net[1].running_mean.clone()
    one, many = mc_predict(net, x, [1, 50], seed=0)
    assert not net.training and not net[3].training  # modes restored
    assert torch.equal(net[1].running_mean, running)  # BatchNorm was in eval mode
    torch.testing.assert_close(one.sum(1), torch.ones(32))
    again = mc_predict(net, x, [1, 50], seed=0)
    assert torch.equal(again[1], many)  # seeded
    deterministic = torch.softmax(net(x), 1)
    assert (one - deterministic).abs().max() > 1e-3  # a stochastic pass differs...
    # ...and the average of many is closer to the weight-scaling rule than one pass
    assert (many - deterministic).abs().mean() < (one - deterministic).abs().mean()


def test_mc_reading_says_when_averaging_matches_scaling():
    records = [
        {
            **_run("dropout", s, 1.0, 0.70, p=0.5),
            "scaling_test_acc": 0.70 + 0.001 * s,
            "mc_k": [1, 10, 100],
            "mc_test_acc": [0.60 + 0.001 * s, 0.69 + 0.001 * s, 0.701],
        }
        for s in range(3)
    ]
    text = MCAveraging().reading(records, {})[0]
    assert "from k = 100 passes" in text and "as good as averaging" in text
    # the same networks, MC 1 point below the rule on every seed: a clear, paired difference
    for r in records:
        r["mc_test_acc"][-1] = r["scaling_test_acc"] - 0.01 - 0.001 * r["seed"]
    text = MCAveraging().reading(records, {})[0]
    assert "stays below the rule" in text and "the deterministic rule is the better" in text


