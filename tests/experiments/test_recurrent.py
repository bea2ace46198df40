"""dropkit run recurrent on tiny settings: outputs, variants, errors."""

from __future__ import annotations

import json

import pytest

from dropkit.experiments.runner import ConfigError, run_experiment


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment(
        "recurrent", out=tmp_path / "r", quiet=True, **{**tiny, "epochs": 1, "seeds": [0]}, p=[0.3]
    )
    for name in ("results.json", "results.csv", "report.html", "curves.png", "recurrent.png"):
        assert (out / name).is_file(), name
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [r["variant"] for r in runs] == [
        "none",
        "naive",
        "locked",
        "weightdrop",
        "between-layers",
    ]
    assert all(r["p"] == (0.0 if r["variant"] == "none" else 0.3) for r in runs)
    assert "GRU on" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "options, message",
    [
        ({"rnn_variants": "zoneout"}, "Choose one of: none, naive, locked, weightdrop"),
        ({"models": ["wide-mlp"]}, "--model gru"),
    ],
)
def test_bad_arguments_list_the_choices(tiny, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("recurrent", out=tmp_path / "r", quiet=True, **{**tiny, **options})
