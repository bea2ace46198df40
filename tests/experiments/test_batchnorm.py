"""dropkit run batchnorm on tiny settings: outputs, the measured ratio, recalibration, errors."""

from __future__ import annotations

import json

import pytest
import torch

from dropkit.experiments import models_extra
from dropkit.experiments.batchnorm import SWEEP_P, measure
from dropkit.experiments.runner import ConfigError, run_experiment


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment("batchnorm", out=tmp_path / "b", quiet=True, **tiny, p=[0.5])
    for name in (
        "results.json",
        "results.csv",
        "report.html",
        "curves.png",
        "variance_shift.png",
        "batchnorm_accuracy.png",
    ):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    runs = doc["runs"]
    # 2 models x 2 seeds x (none + 3 variants at p = 0.5)
    assert len(runs) == 2 * 2 * 4
    for r in runs:
        assert set(r["bn"]) and all("ratio" in v for v in r["bn"].values())
        if r["variant"] in ("none", "after-bn"):
            # no dropout feeds a BN layer: the first BN's input is the same in both
            # modes (later ones differ only through the earlier BNs' statistics)
            assert r["ratio_bn1"] == pytest.approx(1.0)
        else:
            assert r["ratio_bn1"] < 0.9
            assert r["ratio_bn1"] == pytest.approx(r["analytic_ratio_bn1"], rel=0.1)
            assert len(r["sweep"]["measured"]) == len(r["sweep"]["p"])
    by_key = {(r["model"], r["seed"], r["variant"]): r for r in runs}
    for (model, seed, variant), r in by_key.items():
        if variant == "before-bn+recalibrate":
            twin = by_key[(model, seed, "before-bn")]
            # the same network, trained again by its own run, before recalibration
            assert r["test_acc_before_recalibrate"] == twin["test_acc"]
            timeless = lambda h: {k: v for k, v in h.items() if k != "seconds"}  # noqa: E731
            assert timeless(r["history"]) == timeless(twin["history"])
            # after recalibration the running variance is the eval-mode one (the
            # measurement uses the first examples of the training set, the
            # recalibration all of it: equal up to sampling)
            assert r["eval_over_running_bn1"] == pytest.approx(1.0, abs=0.2)
    assert "variance ratio" in (out / "report.html").read_text()


def test_measured_ratio_follows_the_formula_on_the_first_bn():
    torch.manual_seed(0)
    model = models_extra.build("mlp-bn", 24, 4, 0.5, "before-bn")
    x = torch.randn(2000, 24)
    m = measure(model, list(torch.split(x, 100)))
    sweep = m["sweep"]
    assert sweep["p"] == list(SWEEP_P) and sweep["layer"] == next(iter(m["bn"]))
    for p, got, want in zip(sweep["p"], sweep["measured"], sweep["analytic"], strict=True):
        assert got == pytest.approx(want, abs=0.03), p
    assert sweep["measured"][0] == pytest.approx(1.0)
    first, second = m["bn"].values()
    # the formula applies where a dropout feeds the BN; the record keeps 1.0 elsewhere
    assert first["analytic_ratio"] == pytest.approx(sweep["analytic"][SWEEP_P.index(0.5)])
    assert set(first) == {"train_var", "eval_var", "running_var", "ratio",
                          "eval_over_running", "analytic_ratio"}
    assert first["eval_over_running"] == pytest.approx(first["eval_var"] / first["running_var"])
    assert second["analytic_ratio"] != 1.0  # mlp-bn's second BN is fed by dropout too


def test_no_sweep_without_dropout_before_bn():
    torch.manual_seed(0)
    model = models_extra.build("mlp-bn", 24, 4, 0.5, "after-bn")
    m = measure(model, list(torch.split(torch.randn(400, 24), 100)))
    assert "sweep" not in m
    assert all(rec["analytic_ratio"] == 1.0 for rec in m["bn"].values())


@pytest.mark.parametrize(
    "options, message",
    [
        ({"bn_variants": "middle-bn"}, "Choose one of: none, before-bn, after-bn"),
        ({"models": ["wide-mlp"]}, "Choose from: mlp-bn, cnn1d-bn"),
    ],
)
def test_bad_arguments_list_the_choices(tiny, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("batchnorm", out=tmp_path / "b", quiet=True, **{**tiny, **options})


@pytest.mark.slow
def test_resumed_run_equals_an_uninterrupted_one(tiny, tmp_path):
    # before-bn+recalibrate reuses its twin's network in an uninterrupted run and
    # retrains it when resumed: the numbers must not tell the two apart
    import json

    opts = {**tiny, "p": [0.5], "seeds": [0], "bn_variants": "before-bn,before-bn+recalibrate"}
    full = run_experiment("batchnorm", out=tmp_path / "full", quiet=True, **opts)
    part = run_experiment("batchnorm", out=tmp_path / "part", quiet=True, stop_after=1, **opts)
    run_experiment(resume=part, quiet=True)

    def numbers(path):
        runs = json.loads((path / "results.json").read_text())["runs"]
        def timeless(value):
            if isinstance(value, dict):
                return {k: timeless(v) for k, v in value.items() if "seconds" not in k}
            return value

        return [timeless(r) for r in runs]

    assert numbers(full) == numbers(part)
