"""Every registered experiment, end to end on tiny settings: one parametrized test over
the registry (a new experiment without a case here fails the coverage test)."""

from __future__ import annotations

import base64
import html as html_lib
import json
import re

import pytest

from dropkit.experiments import registry
from dropkit.experiments.runner import ConfigError, run_experiment

#: per experiment: options that make it finish in seconds (on top of the ``tiny``
#: fixture: data set "tiny", 2 epochs, seeds 0 and 1, 1 worker) and a bad option
#: with a word of the error it must give
CASES: dict[str, tuple[dict, tuple[dict, str]]] = {
    "compare": ({"models": ["tutorial-mlp"]}, ({"regularizers": ["nope"]}, "nope")),
    "sweep-p": ({"models": ["tutorial-mlp"], "p": [0.0, 0.5]}, ({"p": [1.5]}, "--p")),
    "data-size": (
        {"models": ["tutorial-mlp"], "fractions": [0.5, 1.0]}, ({"fractions": [0.0]}, "fraction")
    ),
    "mc-averaging": (
        {"models": ["tutorial-mlp"], "samples": [1, 3]}, ({"samples": [0]}, "samples")
    ),
    "uncertainty": (
        {"models": ["tutorial-mlp"], "mc_samples": 4, "ece_bins": 5},
        ({"mc_samples": 0}, "samples"),
    ),
    "convergence": ({"p": [0.5], "target_accuracy": 0.3}, ({"timing_reps": 0}, "step-time")),
    "step-time": ({"seeds": [0], "shapes": "tutorial", "reps": 1}, ({"shapes": "huge"}, "huge")),
    "batchnorm": ({"p": [0.5]}, ({"bn_variants": "sideways"}, "sideways")),
    "droppath": ({"p": [0.0, 0.9], "depth": 3}, ({"depth": 1}, "depth")),
    "recurrent": (
        {"epochs": 1, "seeds": [0], "p": [0.3]}, ({"models": ["wide-mlp"]}, "--model gru")
    ),
    "schedule": (
        {"models": ["tutorial-mlp"], "seeds": [0], "epochs": 4, "until_epochs": 2,
         "patience": 2},
        ({"modes": ["sometimes"]}, "sometimes"),
    ),
    "uci": (
        {"dataset": "boston", "splits": 1, "epochs": 3, "passes": 5, "p": [0.05],
         "tau": [0.1], "seeds": None},
        ({"splits": 0}, "splits"),
    ),
}


def test_every_registered_experiment_has_a_case():
    assert sorted(CASES) == sorted(registry.names())


def _options(name: str, tiny: dict) -> dict:
    options = {**tiny, **CASES[name][0]}
    if name == "uci":  # its own data (a regression table) and seeds (the splits)
        options = {k: v for k, v in options.items() if k not in ("batch_size", "seeds")}
    return {k: v for k, v in options.items() if v is not None}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_tiny_run_writes_results_and_a_self_contained_report(name, tiny, tmp_path):
    out = run_experiment(name, out=tmp_path / "out", quiet=True, **_options(name, tiny))
    doc = json.loads((out / "results.json").read_text())
    assert doc["experiment"] == name and doc["status"] == "complete"
    assert len(doc["runs"]) == doc["planned_runs"] >= 1
    assert len({r["key"] for r in doc["runs"]}) == len(doc["runs"])
    rows = (out / "results.csv").read_text().strip().splitlines()
    assert len(rows) == len(doc["runs"]) + 1
    html = (out / "report.html").read_text()
    pngs = sorted(out.glob("*.png"))
    assert pngs, "an experiment draws at least one figure"
    for png in pngs:
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG")
        assert base64.b64encode(data).decode() in html  # embedded, not linked
    assert not re.search(r"""src=(?!['"]?data:)""", html)
    assert html_lib.escape(registry.get(name).table_note) in html  # how it was measured
    assert "peeks at the test set" not in html
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_bad_option_is_refused_before_anything_is_written(name, tiny, tmp_path):
    bad, word = CASES[name][1]
    with pytest.raises(ConfigError, match=re.escape(word)):
        run_experiment(name, out=tmp_path / "out", quiet=True, **{**_options(name, tiny), **bad})
    assert not (tmp_path / "out" / "results.json").exists()
