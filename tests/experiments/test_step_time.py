"""dropkit run step-time on tiny settings: outputs, the split's fields, errors, the reading."""

from __future__ import annotations

import json
import random

import pytest

import dropkit.experiments.step_time  # noqa: F401  (registers step-time)
from dropkit.experiments.runner import ConfigError, run_experiment
from dropkit.experiments.step_time import SHAPES, step_time_reading, time_split


def test_tiny_run_writes_every_output(tiny, tmp_path):
    out = run_experiment(
        "step-time", out=tmp_path / "s", quiet=True, **{**tiny, "seeds": [0]},
        shapes="tutorial", reps=1,
    )
    for name in ("results.json", "results.csv", "report.html", "time_split.png"):
        assert (out / name).is_file(), name
    doc = json.loads((out / "results.json").read_text())
    (r,) = doc["runs"]
    assert (r["shape"], r["width"], r["batch_size"], r["impl"]) == ("tutorial", 64, 32,
                                                                    "torch,dropkit")
    assert r["p"] == 0.5 and r["reps"] == 1 and r["model"] == "mlp-64"
    for key in ("step_ms_none", "step_ms_torch", "step_ms_dropkit", "dropout_ms_torch",
                "dropout_ms_dropkit", "dropout_share_torch", "dropout_share_dropkit",
                "dropout_alone_ms_torch", "step_median_ms_none", "dropout_alone_median_ms_dropkit"):
        assert r[key] >= 0, key
    assert 0 <= r["dropout_share_dropkit"] <= 1
    assert "time per training step" in (out / "report.html").read_text()


def test_shapes_times_p_and_one_impl(tiny, tmp_path):
    out = run_experiment(
        "step-time", out=tmp_path / "s", quiet=True, **{**tiny, "seeds": [0]},
        shapes="tutorial", reps=1, p=[0.2, 0.5], impl="dropkit",
    )
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert [(r["shape"], r["p"]) for r in runs] == [("tutorial", 0.2), ("tutorial", 0.5)]
    assert all("step_ms_torch" not in r and "step_ms_dropkit" in r for r in runs)


def test_time_split_fields():
    split = time_split(16, 8, 0.5, ["torch", "dropkit"], reps=2, number=1)
    assert set(split) >= {
        "step_ms_none",
        "step_ms_torch",
        "step_median_ms_torch",
        "dropout_ms_dropkit",
        "dropout_share_torch",
        "dropout_alone_ms_dropkit",
    }
    for impl in ("torch", "dropkit"):
        diff = split[f"step_ms_{impl}"] - split["step_ms_none"]
        assert split[f"dropout_ms_{impl}"] == pytest.approx(max(0.0, diff))
        # the fastest of the rounds is never above their median
        assert split[f"step_ms_{impl}"] <= split[f"step_median_ms_{impl}"]


@pytest.mark.parametrize(
    "options, message",
    [
        ({"impl": "jax"}, "Choose one of: torch, dropkit"),
        ({"shapes": "huge"}, "Choose one of: tutorial, wide, wide-large-batch, wider"),
        ({"reps": 0}, "--reps"),
        ({"target": 0.5}, "do not apply to experiment 'step-time'"),
    ],
)
def test_bad_arguments_list_the_choices(tiny, tmp_path, options, message):
    with pytest.raises(ConfigError, match=message):
        run_experiment("step-time", out=tmp_path / "s", quiet=True, **{**tiny, **options})
    assert not (tmp_path / "s" / "results.json").exists()


def test_impl_is_one_option_of_convergence_and_step_time():
    # both experiments declare --impl; the `dropkit run` parser holds it once
    from dropkit.cli import build_parser

    parser = build_parser()
    for experiment in ("convergence", "step-time"):
        args = parser.parse_args(["run", experiment, "--impl", "torch"])
        assert args.impl == ["torch"]


# ------------------------------------------------------------------ the reading
def _row(rng, shape, shares=None):
    width, batch, description = SHAPES[shape]
    row = {"impl": "torch,dropkit", "shape": shape, "width": width, "batch_size": batch,
           "description": description, "p": 0.5, "step_ms_none": rng.choice([1.0, 2.0])}
    for impl in ("torch", "dropkit"):
        row[f"step_ms_{impl}"] = row["step_ms_none"] * rng.choice([1.0, 1.3, 1.5])
        row[f"dropout_ms_{impl}"] = row[f"step_ms_{impl}"] - row["step_ms_none"]
        row[f"dropout_share_{impl}"] = (
            shares if shares is not None else row[f"dropout_ms_{impl}"] / row[f"step_ms_{impl}"]
        )
        row[f"dropout_alone_ms_{impl}"] = 0.1
    return row


@pytest.mark.parametrize("case", range(20))
def test_reading_grammar(case):
    from test_wording import assert_grammar  # the readings' grammar, one place

    rng = random.Random(case)
    shapes = list(SHAPES)[: rng.choice([1, 2, 3, 4])]
    (text,) = step_time_reading([_row(rng, s) for s in shapes])
    assert_grammar([text])
    assert text.startswith("CPU time per training step")


def test_equal_shares_are_not_a_range():
    rng = random.Random(0)
    (text,) = step_time_reading([_row(rng, s, shares=0.3) for s in ("wide", "wider")])
    assert "costs 30% of a step" in text and "30% to 30%" not in text


def test_no_records_no_reading():
    assert step_time_reading([]) == []
