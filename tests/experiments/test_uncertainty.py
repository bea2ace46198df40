"""``dropkit run uncertainty``: its metrics, and a tiny end-to-end run."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dropkit.experiments import data
from dropkit.experiments.runner import run_experiment
from dropkit.experiments.uncertainty import (
    auroc,
    calibration_bins,
    expected_calibration_error,
    negative_log_likelihood,
    prediction_metrics,
)


def test_auroc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 20, (500,), generator=g).double()  # many ties
    positive = torch.rand(500, generator=g) < 0.3 + 0.02 * scores
    assert auroc(scores, positive) == pytest.approx(roc_auc_score(positive, scores), abs=1e-12)
    assert auroc(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([False, False, True])) == 1.0
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([False, True])) == 0.5
    assert math.isnan(auroc(torch.tensor([1.0, 2.0]), torch.tensor([True, True])))


def test_ece_and_nll_on_a_hand_example():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]], dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 0])
    bins = calibration_bins(probs, y, bins=10)
    assert sum(bins["count"]) == 4 and bins["count"].count(2) == 2
    # bin of 0.9: accuracy 1/2, confidence 0.9; bin of 0.6: accuracy 1, confidence 0.6
    assert expected_calibration_error(bins) == pytest.approx(0.5 * 0.4 + 0.5 * 0.4)
    assert negative_log_likelihood(probs, y) == pytest.approx(
        -(math.log(0.9) + math.log(0.1) + 2 * math.log(0.6)) / 4
    )
    # a calibrated predictor: confidence 0.75 and 3 of 4 right
    calibrated = torch.tensor([[0.75, 0.25]] * 4, dtype=torch.float64)
    assert expected_calibration_error(
        calibration_bins(calibrated, torch.tensor([0, 0, 0, 1]), 15)
    ) == pytest.approx(0.0)
    m = prediction_metrics(probs, y, 10)
    assert m["acc"] == 0.75 and m["mean_confidence"] == pytest.approx(0.75)


def _tiny() -> data.Dataset:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 8, generator=g) * 2
    y = torch.randint(0, 3, (240,), generator=g)
    x = centres[y] + torch.randn(240, 8, generator=g)
    return data.Dataset("tiny-unc", x[:160], y[:160], x[160:], y[160:], 3, "three blobs")


@pytest.mark.slow  # ~5 s alone (imports, plots), more on a busy machine
def test_tiny_run_writes_the_usual_outputs(tmp_path):
    data.register_dataset("tiny-unc", _tiny)
    out = run_experiment(
        "uncertainty",
        out=tmp_path / "unc",
        quiet=True,
        dataset="tiny-unc",
        models=["tutorial-mlp"],
        epochs=2,
        seeds=[0, 1],
        mc_samples=4,
        ece_bins=5,
    )
    for name in ("results.json", "results.csv", "report.html", "curves.png", "reliability.png"):
        assert (out / name).stat().st_size > 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["mc_samples"] == 4 and len(doc["runs"]) == 2
    for r in doc["runs"]:
        for kind in ("det", "mc"):
            assert 0 <= r[f"{kind}_acc"] <= 1 and 0 <= r[f"{kind}_ece"] <= 1
            assert r[f"{kind}_nll"] > 0
            assert sum(r["reliability"][kind]["count"]) == 80
        assert r["det_acc"] == pytest.approx(r["test_acc"])
        assert 0 <= r["mc_auroc_mi"] <= 1 and r["mc_mean_mi"] > 0
    assert "mutual information" in (out / "report.html").read_text()


def test_bad_option_is_a_clear_error(tmp_path):
    from dropkit.experiments.runner import ConfigError

    with pytest.raises(ConfigError, match="--mc-samples"):
        run_experiment("uncertainty", out=tmp_path / "x", quiet=True, mc_samples=0)
