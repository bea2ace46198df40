"""Whole experiments on a tiny data set: every output file, the JSON schema,
reproducibility, and resuming after an interruption."""

from __future__ import annotations

import base64
import csv
import json
import math
import re

import pytest

from dropkit.experiments import registry
from dropkit.experiments.results import HISTORY_FIELDS, SCHEMA_FIELDS
from dropkit.experiments.runner import run_experiment

#: per experiment: tiny options and the PNGs it must write
CASES = {
    "compare": (
        {"models": ["tutorial-mlp", "resmlp"], "regularizers": ["none", "dropout", "l1"]},
        ["curves.png", "compare.png"],
    ),
    "sweep-p": ({"models": ["tutorial-mlp"], "p": [0.0, 0.5]}, ["curves.png", "sweep_p.png"]),
    "data-size": (
        {"models": ["tutorial-mlp"], "fractions": [0.5, 1.0]},
        ["curves.png", "data_size.png"],
    ),
    "mc-averaging": (
        {"models": ["tutorial-mlp"], "samples": [1, 3]},
        ["curves.png", "mc_averaging.png"],
    ),
}


def check_schema(doc: dict) -> None:
    assert set(doc) >= {"experiment", "config", "environment", "runs"}
    assert {"torch", "threads", "device", "python"} <= set(doc["environment"])
    for run in doc["runs"]:
        assert set(SCHEMA_FIELDS) <= set(run)
        assert isinstance(run["dataset"], str) and isinstance(run["model"], str)
        assert isinstance(run["regularizer"], str) and isinstance(run["seed"], int)
        assert 0.0 <= run["p"] < 1.0 and run["seconds"] >= 0
        for key in ("train_acc", "test_acc"):
            assert 0.0 <= run[key] <= 1.0
        for key in ("train_loss", "test_loss"):
            assert math.isfinite(run[key]) and run[key] >= 0
        history = run["history"]
        assert set(HISTORY_FIELDS) <= set(history)
        n = len(history["epoch"])
        assert n >= 1 and all(len(history[k]) == n for k in HISTORY_FIELDS)
        assert history["epoch"] == list(range(1, n + 1))
        assert all(0.0 <= a <= 1.0 for a in history["train_acc"] + history["val_acc"])
        # the protocol: test metrics at the best validation epoch, which the
        # validation curve names; the last epoch's numbers under last_*
        assert 1 <= run["best_epoch"] <= run["stopped_epoch"] == n <= run["epochs"]
        assert run["val_acc"] == history["val_acc"][run["best_epoch"] - 1]
        assert run["val_acc"] == max(history["val_acc"])
        assert history["val_acc"].index(run["val_acc"]) == run["best_epoch"] - 1
        assert run["last_val_acc"] == history["val_acc"][-1]
        assert 0.0 <= run["last_test_acc"] <= 1.0 and "test_acc" not in history
        assert run["gap"] == pytest.approx(run["train_acc"] - run["test_acc"])


def _numbers(doc: dict) -> list:
    """Everything in the runs except wall-clock times."""
    out = []
    for run in doc["runs"]:
        r = {k: v for k, v in run.items() if "seconds" not in k}
        r["history"] = {k: v for k, v in run["history"].items() if k != "seconds"}
        out.append(r)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_experiment_writes_every_output(name, tiny, tmp_path):
    options, pngs = CASES[name]
    out = run_experiment(name, out=tmp_path / "out", quiet=True, **tiny, **options)
    doc = json.loads((out / "results.json").read_text())
    check_schema(doc)
    assert doc["experiment"] == name and doc["status"] == "complete"
    assert len(doc["runs"]) == doc["planned_runs"] == len(registry.get(name)().runs(doc["config"]))
    assert {r["seed"] for r in doc["runs"]} == {0, 1}

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(doc["runs"])
    assert set(SCHEMA_FIELDS) - {"history"} <= set(rows[0])
    assert [float(r["test_acc"]) for r in rows] == [r["test_acc"] for r in doc["runs"]]

    html = (out / "report.html").read_text()
    for png in pngs:
        data = (out / png).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000
        assert base64.b64encode(data).decode() in html  # embedded, not linked
    assert not re.search(r"""src=(?!['"]?data:)""", html)  # nothing external
    assert "Reading" in html and "Configuration" in html and "<table>" in html
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_compare_runs_are_the_product_of_the_options(tiny):
    config = {"models": ["tutorial-mlp", "wide-mlp"], "regularizers": ["none", "dropout", "l2"]}
    from dropkit.experiments.runner import resolve_config

    cfg = resolve_config("compare", {**tiny, **config, "p": [0.1, 0.3]})
    specs = registry.get("compare")().runs(cfg)
    # none and l2 ignore p; dropout runs at each p: (1 + 2 + 1) per model and seed
    assert len(specs) == 2 * 2 * 4
    assert {s.p for s in specs if s.regularizer == "dropout"} == {0.1, 0.3}
    assert {s.p for s in specs if s.regularizer != "dropout"} == {0.0}


@pytest.mark.slow
def test_same_arguments_and_seeds_give_the_same_numbers(tiny, tmp_path):
    opts = {**tiny, "models": ["tutorial-mlp"], "regularizers": ["dropout", "dropout-classic"]}
    a = run_experiment("compare", out=tmp_path / "a", quiet=True, **opts)
    b = run_experiment("compare", out=tmp_path / "b", quiet=True, **opts)
    doc_a = json.loads((a / "results.json").read_text())
    doc_b = json.loads((b / "results.json").read_text())
    assert _numbers(doc_a) == _numbers(doc_b)
    # and the seeds matter
    s0, s1 = (r for r in doc_a["runs"] if r["regularizer"] == "dropout")
    assert s0["history"]["train_loss"] != s1["history"]["train_loss"]


@pytest.mark.slow
def test_resume_completes_an_interrupted_experiment_without_rerunning(tiny, tmp_path):
    opts = {**tiny, "models": ["tutorial-mlp"], "regularizers": ["none", "dropout"]}
    out = run_experiment("compare", out=tmp_path / "r", quiet=True, stop_after=3, **opts)
    partial = json.loads((out / "results.json").read_text())
    assert partial["status"] == "interrupted" and len(partial["runs"]) == 3
    assert partial["planned_runs"] == 4
    assert not (out / "report.html").exists()

    run_experiment(resume=out, quiet=True)
    done = json.loads((out / "results.json").read_text())
    assert done["status"] == "complete" and len(done["runs"]) == 4
    # the three finished runs are kept as they were (their wall times too: not re-run)
    assert done["runs"][:3] == partial["runs"]
    assert (out / "report.html").exists()

    # the resumed result equals an uninterrupted run
    full = run_experiment("compare", out=tmp_path / "full", quiet=True, **opts)
    assert _numbers(done) == _numbers(json.loads((full / "results.json").read_text()))

    # resuming a finished experiment runs nothing
    run_experiment(resume=out, quiet=True)
    assert json.loads((out / "results.json").read_text())["runs"] == done["runs"]


def test_results_are_written_after_every_run(tiny, tmp_path):
    opts = {**tiny, "models": ["tutorial-mlp"], "regularizers": ["none"], "seeds": [0, 1, 2]}
    out = run_experiment("compare", out=tmp_path / "w", quiet=True, stop_after=1, **opts)
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["runs"]) == 1
    with open(out / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == 1


def test_the_default_run_is_the_documented_one():
    """`dropkit run` plans 12 runs (about two minutes on 2 cores): guard the time budget."""
    from dropkit.experiments.runner import resolve_config

    config = resolve_config("compare", {})
    specs = registry.get("compare")().runs(config)
    assert config["dataset"] == "mnist1d" and config["seeds"] == [0, 1, 2]
    assert config["models"] == ["tutorial-mlp", "wide-mlp"]
    assert config["regularizers"] == ["none", "dropout"]
    assert len(specs) == 12 and {s.epochs for s in specs} == {500}
    assert {s.patience for s in specs} == {50} and {s.val_fraction for s in specs} == {0.2}
    assert {(s.model, s.p) for s in specs if s.regularizer == "dropout"} == {
        ("wide-mlp", 0.5),
        ("tutorial-mlp", 0.5),
    }


def test_a_diverged_run_is_recorded_in_valid_json(tiny, tmp_path):
    # lr 1e30 overflows the loss: the run is kept and marked, results.json stays JSON
    opts = {**tiny, "models": ["tutorial-mlp"], "regularizers": ["none"], "lr": 1e30}
    out = run_experiment("compare", out=tmp_path / "nan", quiet=True, **opts)
    text = (out / "results.json").read_text()
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in results.json"))
    assert [r["diverged"] for r in doc["runs"]] == [True, True]
    assert any(r["test_loss"] is None for r in doc["runs"])
    assert (out / "report.html").exists()
    run_experiment(resume=out, quiet=True)  # and --resume reads it back


def test_resume_removes_temporaries_left_by_a_killed_process(tiny, tmp_path):
    opts = {**tiny, "models": ["tutorial-mlp"], "regularizers": ["none"], "seeds": [0, 1]}
    out = run_experiment("compare", out=tmp_path / "k", quiet=True, stop_after=1, **opts)
    stale = out / ".results.json.abc123.tmp"
    stale.write_text("{half a docu")
    run_experiment(resume=out, quiet=True)
    assert not stale.exists()
    assert json.loads((out / "results.json").read_text())["status"] == "complete"


def test_concurrent_default_output_directories_are_distinct(tmp_path, monkeypatch):
    import threading

    from dropkit.experiments.runner import default_out_dir

    monkeypatch.chdir(tmp_path)
    made, barrier = [], threading.Barrier(6)

    def make():
        barrier.wait()
        made.append(default_out_dir("compare"))

    threads = [threading.Thread(target=make) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 6 and all(p.is_dir() for p in made)


def _exit_code(main, argv) -> int:
    """The status ``dropkit`` exits with: argparse errors raise, run errors return 2."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args,message", [
    (["--threads", "-2"], "--threads: expected a positive integer"),
    (["--threads", "0"], "--threads: expected a positive integer"),
    (["--weight-decay", "-1"], "--weight-decay: expected a finite number >= 0"),
    (["--max-norm", "0"], "--max-norm: expected a finite number > 0"),
    (["--lr", "inf"], "--lr: expected a finite number > 0"),
    (["--lr", "nan"], "--lr"),
    (["--seeds", "1,1"], "--seeds: a value is repeated"),
])
def test_bad_numbers_give_one_line_and_write_nothing(args, message, tmp_path, monkeypatch,
                                                     capsys):
    from dropkit.cli import main

    monkeypatch.chdir(tmp_path)
    assert _exit_code(main, ["run", "--epochs", "1", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing written, not even runs/


def test_bad_out_directories_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from dropkit.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("x")
    for out, words in (("afile", "is a file"), ("afile/sub", "lies under the file")):
        assert _exit_code(main, ["run", "--epochs", "1", "--out", out]) == 2
        assert words in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("document", ['{"runs": 3}', "[1, 2]",
                                      '{"experiment": "compare", "config": {}, "runs": 3}',
                                      '{"experiment": "compare", "config": {}, "runs": [1]}'])
def test_resume_of_a_results_file_of_the_wrong_shape_is_one_line(document, tmp_path, capsys):
    from dropkit.cli import main

    (tmp_path / "results.json").write_text(document)
    assert _exit_code(main, ["run", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Cannot resume" in err and "Traceback" not in err
