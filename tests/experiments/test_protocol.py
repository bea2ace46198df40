"""The protocol: a seeded validation split, early stopping on it, test read at the best
validation epoch; the fitting regimes; and the compare reading built on them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dropkit.experiments import fit
from dropkit.experiments.compare import compare_reading
from dropkit.experiments.data import Dataset
from dropkit.experiments.train import RunSpec, train_run
from dropkit.experiments.wording import sentences


def _data(n=400, classes=4, features=6, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, features, generator=g) + y[:, None].float()
    return Dataset("toy", x, y, x[:100].clone(), y[:100].clone(), classes)


def test_validation_split_is_stratified_seeded_and_disjoint():
    d = _data()
    train, val = d.split_validation(0.2, seed=3)
    assert len(val.y_train) == 80 and len(train.y_train) == 320  # 20 of each class's 100
    assert torch.bincount(val.y_train).tolist() == [20, 20, 20, 20]
    rows = lambda t: {tuple(r.tolist()) for r in t}  # noqa: E731
    assert not rows(train.x_train) & rows(val.x_train)
    assert rows(train.x_train) | rows(val.x_train) == rows(d.x_train)
    again, val_again = d.split_validation(0.2, seed=3)
    assert torch.equal(val.x_train, val_again.x_train) and torch.equal(train.x_train, again.x_train)
    _, other = d.split_validation(0.2, seed=4)
    assert not torch.equal(val.x_train, other.x_train)
    # the draw depends on the seed only, not on the global generators
    np.random.seed(123)
    torch.manual_seed(123)
    assert torch.equal(d.split_validation(0.2, seed=3)[1].x_train, val.x_train)
    with pytest.raises(ValueError, match="validation fraction"):
        d.split_validation(1.0, 0)


def _spec(**kw) -> RunSpec:
    base = dict(dataset="toy", model="tutorial-mlp", regularizer="none", p=0.0, seed=0,
                epochs=60, batch_size=32, lr=1e-2, patience=3)
    return RunSpec(**{**base, **kw})


def test_early_stopping_reads_test_at_the_best_validation_epoch():
    d = _data()
    r = train_run(_spec(), d).record
    h = r["history"]
    best = r["best_epoch"]
    assert h["val_acc"][best - 1] == max(h["val_acc"]) == r["val_acc"]
    assert h["val_acc"].index(r["val_acc"]) == best - 1  # the first of equal maxima
    if r["stopped_by"] == "patience":
        assert r["stopped_epoch"] == best + 3 and r["stopped_epoch"] < 60
    assert len(h["epoch"]) == r["stopped_epoch"]
    assert "test_acc" not in h  # the test split is not read per epoch
    assert r["val_size"] == 80 and r["train_size"] == 320


def test_the_returned_model_holds_the_best_epochs_weights():
    d = _data()
    result = train_run(_spec(patience=2), d)
    r = result.record
    x, y = result.data.x_test, result.data.y_test
    with torch.no_grad():
        acc = (result.model(x).argmax(1) == y).float().mean().item()
    assert acc == pytest.approx(r["test_acc"])
    # the last epoch's numbers are kept apart
    assert {"last_train_acc", "last_val_acc", "last_test_acc", "last_test_loss"} <= set(r)
    assert r["last_val_acc"] == r["history"]["val_acc"][-1]


def test_no_patience_trains_the_whole_budget():
    r = train_run(_spec(epochs=8, patience=None), _data()).record
    assert r["stopped_epoch"] == 8 and r["stopped_by"] == "budget"


def _record(train, val, *, stopped_by="patience", rise=0.0, seed=0, reg="none", p=0.0,
            test=None, best=40, epochs=500):
    n = 60
    curve = list(np.linspace(train - rise, train, n))
    test = val - 0.02 if test is None else test
    return {
        "dataset": "d", "model": "m", "regularizer": reg, "p": p, "seed": seed,
        "train_acc": train, "val_acc": val, "test_acc": test, "test_loss": 1 - test,
        "gap": train - test, "best_epoch": best, "stopped_epoch": n, "epochs": epochs,
        "stopped_by": stopped_by, "patience": 50,
        "history": {"train_acc": curve},
    }


@pytest.mark.parametrize(
    "record, regime",
    [
        # budget stops: under-trained only while validation was still improving
        # (_record's runs stop at epoch 60)
        (_record(0.70, 0.65, stopped_by="budget", best=58), "under-trained"),
        (_record(0.99, 0.70, stopped_by="budget", best=55), "under-trained"),
        (_record(0.99, 0.70, stopped_by="budget", best=5), "overfitting"),  # levelled off
        (_record(0.70, 0.66, stopped_by="budget", best=10), "under-capacity"),
        (_record(0.99, 0.70), "overfitting"),
        (_record(0.79, 0.60), "overfitting"),
        (_record(0.70, 0.66), "under-capacity"),
        (_record(0.70, 0.66, rise=0.05), "fits"),  # still rising: not a plateau
        (_record(0.70, 0.66, rise=0.015), "under-capacity"),
        (_record(0.96, 0.93), "fits"),
    ],
)
def test_regimes(record, regime):
    assert fit.run_regime(record) == regime


def test_a_budget_artefact_is_never_called_underfitting():
    records = [_record(0.70, 0.62, stopped_by="budget", seed=s, best=59) for s in range(3)] + [
        _record(0.55, 0.52, stopped_by="budget", seed=s, reg="dropout", p=0.5, best=60)
        for s in range(3)
    ]
    text = compare_reading(records)[0]
    assert "under-trained" in text and "budget artefact" in text
    assert "underfit" not in text and "lacks capacity" not in text
    assert "cannot be read from this run" in text


def test_the_claim_holds_when_dropout_narrows_an_overfitting_gap():
    records = [_record(0.99, 0.66 + 0.002 * s, seed=s, test=0.65 + 0.002 * s) for s in range(3)]
    records += [
        _record(0.90, 0.72 + 0.002 * s, seed=s, reg="dropout", p=0.5, test=0.70 + 0.002 * s)
        for s in range(3)
    ]
    text = compare_reading(records)[0]
    assert "Without regularization the network overfits" in text
    assert "raises test accuracy by 5.0 points" in text
    assert "more than twice the standard error" in text
    assert "The claim holds here: dropout (p = 0.5) narrows the train-validation gap from " \
        "32.8 points to 17.8 points and raises test accuracy." in text
    assert "Best here: dropout (p = 0.5)" in text
    assert all(s[0].isupper() for s in sentences(text.split(":", 1)[1]))


def test_a_narrower_gap_without_a_clear_gain_is_said_so():
    records = [_record(0.85, 0.60 + 0.01 * s, seed=s, test=0.56 + 0.02 * s) for s in range(3)]
    records += [
        _record(0.62, 0.58 + 0.01 * s, seed=s, reg="dropout", p=0.5, test=0.55 + 0.03 * s)
        for s in range(3)
    ]
    text = compare_reading(records)[0]
    assert "as far as overfitting goes" in text and "no clear gain in test accuracy" in text
    assert "lacks capacity" in text and "(+0.0 points over its last 50 epochs)" in text


def test_the_claim_does_not_apply_without_overfitting():
    records = [_record(0.70, 0.66, seed=s) for s in range(3)]
    records += [_record(0.60, 0.58, seed=s, reg="dropout", p=0.5) for s in range(3)]
    text = compare_reading(records)[0]
    assert "lacks capacity" in text and "does not apply here" in text


def test_one_seed_is_never_called_clear():
    records = [_record(0.99, 0.60), _record(0.9, 0.70, reg="dropout", p=0.2)]
    text = compare_reading(records)[0]
    assert "one seed only" in text and "more than twice" not in text


def test_seeds_without_a_majority_are_called_mixed():
    runs = [
        _record(0.79, 0.60, seed=0),  # overfitting
        _record(0.70, 0.66, seed=1),  # under-capacity
        _record(0.70, 0.66, rise=0.05, seed=2),  # neither
    ]
    f = fit.diagnose(runs)
    assert f.regime == "mixed"
    sentence = f.sentence()
    assert "mixed signs across its seeds (overfitting in 1, lacking capacity in 1, " \
        "neither in 1)" in sentence
    assert fit.diagnose(runs[:1] + runs[:1] + runs[1:2]).regime == "overfitting"


def test_the_report_flags_runs_cut_by_their_budget(tiny, tmp_path):
    """Whatever the experiment's own reading, runs that ended at the budget while
    still improving are named as such in the report."""
    from dropkit.experiments.runner import budget_warning, run_experiment

    out = run_experiment(
        "sweep-p", out=tmp_path / "s", quiet=True,
        **{**tiny, "models": ["tutorial-mlp"], "p": [0.0], "patience": 5},
    )
    doc = json.loads((out / "results.json").read_text())
    assert all(r["stopped_by"] == "budget" for r in doc["runs"])  # 2 epochs < patience 5
    html = (out / "report.html").read_text()
    assert "Budget: 2 of 2 runs ended at the epoch budget (2) with validation accuracy " \
        "still improving" in html
    stopped = [dict(r, stopped_by="patience") for r in doc["runs"]]
    assert budget_warning(stopped) == []
    assert budget_warning([dict(r, patience=None) for r in doc["runs"]]) == []


def test_repeated_values_are_one_line_errors_and_leave_nothing(tiny, tmp_path, monkeypatch):
    from dropkit.experiments.runner import ConfigError, run_experiment

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="a value is repeated"):
        run_experiment(quiet=True, **{**tiny, "p": [0.5, 0.5]})
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
