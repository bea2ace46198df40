"""dropkit run convergence on tiny settings: outputs, per-run fields, errors, moved options."""

from __future__ import annotations

import json

import pytest

from dropkit.experiments.runner import ConfigError, run_experiment


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment(
        "convergence",
        out=tmp_path / "c",
        quiet=True,
        **tiny,
        p=[0.5],
        target_accuracy=0.3,
    )
    for name in (
        "results.json",
        "results.csv",
        "report.html",
        "curves.png",
        "convergence.png",
    ):
        assert (out / name).is_file(), name
    assert not (out / "time_split.png").exists()  # step-time's now
    doc = json.loads((out / "results.json").read_text())
    train = doc["runs"]
    # none once + dropout p=0.5 for each impl, per seed; no timing rows
    assert len(train) == 2 * 3 and {r["kind"] for r in train} == {"train"}
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
    csv = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert "epochs_to_target" in csv and "seconds_to_target" in csv
    html = (out / "report.html").read_text()
    assert "target validation accuracy" in html and "dropkit run step-time" in html


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
        target_accuracy=target,
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


def test_torch_and_dropkit_runs_share_the_network_and_differ_only_in_masks(tiny, tmp_path):
    # the torch variant is dk.revert of the same network: same weights, same rates
    out = run_experiment(
        "convergence", out=tmp_path / "c", quiet=True, **{**tiny, "seeds": [0]},
        regularizers=["dropout"], p=[0.0], target_accuracy=0.3,
    )
    torch_run, dropkit_run = json.loads((out / "results.json").read_text())["runs"]
    assert (torch_run["impl"], dropkit_run["impl"]) == ("torch", "dropkit")
    # at p = 0 no unit is dropped: the two trainings are the same computation
    assert torch_run["history"]["val_acc"] == dropkit_run["history"]["val_acc"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"impl": "jax"}, "Choose one of: torch, dropkit"),
        ({"target_accuracy": 1.5}, "--target-accuracy"),
        # the step timing is its own experiment now: the old options say where
        ({"timing": "tutorial"}, r"--timing moved.*`dropkit run step-time --shapes tutorial`"),
        ({"timing_reps": 5}, r"--timing-reps moved.*`dropkit run step-time --reps 5`"),
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
