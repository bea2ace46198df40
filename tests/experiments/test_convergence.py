"""dropkit run convergence on tiny settings: outputs, per-run fields, the time split, errors."""

from __future__ import annotations

import json

import pytest
from torch import nn

import dropkit as dk
from dropkit.experiments.convergence import time_split, to_torch_dropout
from dropkit.experiments.runner import ConfigError, run_experiment


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment(
        "convergence",
        out=tmp_path / "c",
        quiet=True,
        **tiny,
        p=[0.5],
        target=0.3,
        timing="tutorial",
        timing_reps=1,
    )
    for name in (
        "results.json",
        "results.csv",
        "report.html",
        "curves.png",
        "convergence.png",
        "time_split.png",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    train = [r for r in doc["runs"] if r["kind"] == "train"]
    timing = [r for r in doc["runs"] if r["kind"] == "timing"]
    # none once + dropout p=0.5 for each impl, per seed; one timing row
    assert len(train) == 2 * 3 and len(timing) == 1
    assert {r["impl"] for r in train} == {"n/a", "torch", "dropkit"}
    for r in train:
        assert r["target"] == 0.3
        assert "epochs_to_target" in r and "seconds_to_target" in r
        if r["epochs_to_target"] is None:
            assert r["seconds_to_target"] is None
            assert max(r["history"]["val_acc"]) < 0.3
        else:
            i = r["epochs_to_target"] - 1
            assert r["history"]["val_acc"][i] >= 0.3
            assert all(a < 0.3 for a in r["history"]["val_acc"][:i])
            assert r["seconds_to_target"] == r["history"]["seconds"][i]
    t = timing[0]
    for key in (
        "step_ms_none",
        "step_ms_torch",
        "step_ms_dropkit",
        "dropout_ms_torch",
        "dropout_ms_dropkit",
        "dropout_share_torch",
        "dropout_share_dropkit",
        "dropout_alone_ms_torch",
    ):
        assert t[key] >= 0, key
    assert 0 <= t["dropout_share_dropkit"] <= 1
    csv = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "epochs_to_target" in csv and "seconds_to_target" in csv
    html = (out / "report.html").read_text()
    assert "target test accuracy" in html and "time per training step" in html


@pytest.mark.parametrize(
    "target, lr, expected",
    [
        # lr 1e-9: the network stays at its initial, chance-level accuracy (about 25% on
        # four classes), so a 99% target is never reached, in any run...
        (0.99, 1e-9, None),
        # ...and a 1% target is reached after the first epoch
        (0.01, 1e-3, 1),
    ],
)
def test_epochs_to_target_null_when_never_reached(tiny, tmp_path, target, lr, expected):
    out = run_experiment(
        "convergence",
        out=tmp_path / "c",
        quiet=True,
        **{**tiny, "seeds": [0]},
        regularizers=["none"],
        target=target,
        lr=lr,
        timing="none",
        impl="dropkit",
    )
    doc = json.loads((out / "results.json").read_text())
    (r,) = doc["runs"]
    assert r["epochs_to_target"] == expected
    if expected is None:
        assert r["seconds_to_target"] is None
        assert max(r["history"]["val_acc"]) < target
    else:
        assert r["seconds_to_target"] == r["history"]["seconds"][0]


def test_torch_impl_swaps_every_dropkit_dropout():
    net = nn.Sequential(nn.Linear(3, 4), dk.Dropout(0.3), nn.Sequential(dk.Dropout1d(0.2)))
    to_torch_dropout(net)
    assert type(net[1]) is nn.Dropout and net[1].p == 0.3
    assert type(net[2][0]) is nn.Dropout1d and net[2][0].p == 0.2


def test_time_split_fields():
    split = time_split(16, 8, 0.5, ["torch", "dropkit"], reps=1, steps=1)
    assert set(split) >= {
        "step_ms_none",
        "step_ms_torch",
        "dropout_ms_dropkit",
        "dropout_share_torch",
        "dropout_alone_ms_dropkit",
    }
    for impl in ("torch", "dropkit"):
        diff = split[f"step_ms_{impl}"] - split["step_ms_none"]
        assert split[f"dropout_ms_{impl}"] == pytest.approx(max(0.0, diff))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"impl": "jax"}, "Choose one of: torch, dropkit"),
        ({"timing": "huge"}, "Choose one of: tutorial, wide, wide-large-batch"),
        ({"target": 1.5}, "--target"),
        ({"regularizers": ["l2"]}, "Choose from: none, dropout"),
    ],
)
def test_bad_arguments_list_the_choices(tiny, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("convergence", out=tmp_path / "c", quiet=True, **{**tiny, **options})
    assert not (tmp_path / "c" / "results.json").exists()


def test_unknown_experiment_lists_the_claims_experiments(tmp_path):
    with pytest.raises(ConfigError, match="convergence.*droppath.*recurrent"):
        run_experiment("convergance", out=tmp_path / "c", quiet=True)
