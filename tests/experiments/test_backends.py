"""Workers and Ray give the numbers, in the order, of one process; the driver alone writes."""

from __future__ import annotations

import json

import pytest

from dropkit.experiments.runner import run_experiment


def _numbers(out) -> tuple[list, list]:
    """(run keys in file order, every run's fields except wall-clock times)."""
    doc = json.loads((out / "results.json").read_text())

    def timeless(value):
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if "seconds" not in k}
        return value

    return [r["key"] for r in doc["runs"]], [timeless(r) for r in doc["runs"]]


@pytest.mark.slow
def test_workers_give_the_numbers_and_order_of_one_process(tmp_path, tiny):
    options = {**tiny, "epochs": 4, "seeds": [0, 1, 2], "models": ["tutorial-mlp"],
               "regularizers": ["none", "dropout"]}
    one = run_experiment("compare", out=tmp_path / "one", quiet=True, **{**options, "workers": 1})
    two = run_experiment("compare", out=tmp_path / "two", quiet=True, **{**options, "workers": 2})
    keys_one, runs_one = _numbers(one)
    keys_two, runs_two = _numbers(two)
    assert len(keys_one) == 6 and keys_one == keys_two
    assert runs_one == runs_two
    doc = json.loads((two / "results.json").read_text())
    assert doc["status"] == "complete" and doc["environment"]["workers"] == 2
    assert not list(two.glob(".*.tmp"))


@pytest.mark.slow
def test_resume_with_workers_finishes_what_one_process_started(tmp_path, tiny):
    options = {**tiny, "epochs": 3, "seeds": [0, 1], "models": ["tutorial-mlp"],
               "regularizers": ["none", "dropout"]}
    whole = run_experiment("compare", out=tmp_path / "whole", quiet=True, **options)
    part = run_experiment(
        "compare", out=tmp_path / "part", quiet=True, stop_after=1, **options
    )
    assert json.loads((part / "results.json").read_text())["status"] == "interrupted"
    run_experiment(resume=part, quiet=True, workers=2)
    assert _numbers(part) == _numbers(whole)


@pytest.mark.slow
def test_ray_gives_the_numbers_of_the_local_backend(tmp_path):
    ray = pytest.importorskip("ray")
    options = {
        "dataset": "digits", "models": ["tutorial-mlp"], "regularizers": ["none", "dropout"],
        "epochs": 3, "seeds": [0, 1], "threads": 1, "workers": 2,
    }
    local = run_experiment("compare", out=tmp_path / "local", quiet=True, **options)
    on_ray = run_experiment(
        "compare", out=tmp_path / "ray", quiet=True, backend="ray", **options
    )
    assert not ray.is_initialized()  # the Ray it started is stopped again
    assert _numbers(on_ray) == _numbers(local)
    doc = json.loads((on_ray / "results.json").read_text())
    assert doc["environment"]["backend"] == "ray" and doc["config"]["backend"] == "ray"
