"""dropkit run droppath on tiny settings: outputs, the convergence criterion, schedules, errors."""

from __future__ import annotations

import json

import pytest

import dropkit as dk
from dropkit.experiments.droppath_depth import CONVERGED_LOSS_RATIO, build_resmlp
from dropkit.experiments.runner import ConfigError, run_experiment


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment("droppath", out=tmp_path / "d", quiet=True, **tiny, p=[0.0, 0.9], depth=3)
    for name in ("results.json", "results.csv", "report.html", "curves.png", "droppath.png"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "results.json").read_text())["runs"]
    # per seed: rate 0 once, 0.9 with each schedule
    assert len(runs) == 2 * 3
    assert {r["schedule"] for r in runs} == {"none", "linear", "uniform"}
    for r in runs:
        assert r["depth"] == 3
        assert r["loss_ratio"] == pytest.approx(r["train_loss"] / r["initial_train_loss"])
        assert r["converged"] == (r["loss_ratio"] <= CONVERGED_LOSS_RATIO)
    assert "converged" in (out / "report.html").read_text()


def test_schedules():
    linear = build_resmlp(10, 3, 0.8, "linear", depth=5)
    uniform = build_resmlp(10, 3, 0.8, "uniform", depth=5)
    rates = [getattr(b.drop_path, "p", 0.0) for b in linear.blocks]
    assert rates == pytest.approx(dk.drop_path_rates(5, 0.8))
    assert [b.drop_path.p for b in uniform.blocks] == pytest.approx([0.8] * 5)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"schedules": "cosine"}, "Choose one of: linear, uniform"),
        ({"depth": 1}, "--depth"),
        ({"models": ["wide-mlp"]}, "resmlp"),
    ],
)
def test_bad_arguments_list_the_choices(tiny, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("droppath", out=tmp_path / "d", quiet=True, **{**tiny, **options})
