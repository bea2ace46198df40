"""``dropkit run`` on the command line: bad arguments give clear errors and write nothing."""

from __future__ import annotations

import json

import pytest

from dropkit.cli import build_parser, main


def _fails(argv, capsys) -> str:
    """Exit status 2 with one line on stderr, whether argparse (a value that does not
    parse) or the runner (a value that does not apply) refused it."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "compair"], "invalid choice: 'compair'"),
        (["run", "--model", "mlp"], "Unknown model 'mlp'. Choose one of: tutorial-mlp, wide-mlp"),
        (["run", "--regularizers", "none,drop"],
         "unknown regularizer 'drop'. Choose one of: none"),
        (["run", "--p", "half"], "expected a number"),
        (["run", "--seeds", "x"], "expected integers"),
    ],
)
def test_bad_names_are_refused_with_the_choices(argv, expected, capsys, tmp_path):
    err = _fails([*argv, "--out", str(tmp_path / "o")], capsys)
    assert expected in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["run", "--p", "1.5"], "expected 0 <= p < 1"),
        (["run", "--model", "wide-mlp", "--regularizers", "droppath"], "Use --model resmlp"),
        (["run", "compare", "--samples", "1,2"], "--samples do not apply to experiment"),
        (["run", "--epochs", "0"], "--epochs"),
        (["run", "--dataset", "mnist"], "Unknown dataset 'mnist'. Choose one of: mnist1d, digits"),
        (["run", "--workers", "0"], "--workers: expected a positive integer"),
        (["run", "--patience", "-1"], "--patience: expected a positive integer"),
        (["run", "--val-fraction", "1"], "--val-fraction: expected 0 < fraction < 1"),
        (["run", "--ray-address", "auto"], "--ray-address applies to --backend ray only"),
        (["run", "compare", "--resume", "x"], "not both"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(argv, expected, capsys, tmp_path):
    assert expected in _fails([*argv, "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert not (tmp_path / "o").exists()


def test_resume_needs_results_and_refuses_new_options(capsys, tmp_path):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "results.json").write_text(json.dumps({"experiment": "compare"}))
    assert main(["run", "--resume", str(tmp_path), "--epochs", "3"]) == 2
    assert "drop --epochs" in capsys.readouterr().err


def test_an_existing_result_is_never_overwritten(capsys, tmp_path):
    (tmp_path / "results.json").write_text("{}")
    assert main(["run", "--out", str(tmp_path), "--quiet"]) == 2
    assert "--resume" in capsys.readouterr().err
    assert (tmp_path / "results.json").read_text() == "{}"


def test_options_parse_lists_and_seed_counts():
    args = build_parser().parse_args(
        [
            "run",
            "sweep-p",
            "--model",
            "wide-mlp,tutorial-mlp",
            "--p",
            "0.1,0.2",
            "0.3",
            "--seeds",
            "2",
            "--regularizers",
            "dropout",
        ]
    )
    assert args.experiment == "sweep-p" and args.models == [["wide-mlp", "tutorial-mlp"]]
    assert args.p == [[0.1, 0.2], [0.3]] and args.seeds == [0, 1]
    assert build_parser().parse_args(["run", "--seeds", "4,7"]).seeds == [4, 7]
    assert build_parser().parse_args(["run"]).experiment is None  # compare by default


def test_every_experiment_has_help(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = capsys.readouterr().out
    for name in ("compare", "sweep-p", "data-size", "mc-averaging", "--resume", "--samples"):
        assert name in out


@pytest.mark.slow
def test_the_command_line_runs_an_experiment_and_prints_the_table(capsys, tmp_path):
    out = tmp_path / "cli"
    code = main(
        [
            "run",
            "compare",
            "--dataset",
            "tiny",
            "--model",
            "tutorial-mlp",
            "--regularizers",
            "none",
            "dropout",
            "--epochs",
            "1",
            "--seeds",
            "1",
            "--threads",
            "1",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "test acc" in printed and "Report:" in printed and "report.html" in printed
    assert (out / "report.html").exists()


def test_each_experiment_has_its_own_help_with_its_real_defaults(capsys):
    from dropkit.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    generic = capsys.readouterr().out
    assert main(["run", "sweep-p", "--help"]) == 0
    sweep = " ".join(capsys.readouterr().out.split())  # the help wraps lines
    generic = " ".join(generic.split())
    assert sweep != generic and sweep.startswith("usage: dropkit run sweep-p")
    assert "(default: 0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9)" in sweep
    assert "The default plans 20 runs" in sweep and "per experiment" not in sweep
    assert "--fractions" not in sweep  # another experiment's option
    assert main(["run", "compare", "-h"]) == 0
    compare = " ".join(capsys.readouterr().out.split())
    assert "(default: tutorial-mlp,wide-mlp)" in compare and "(default: 0.5)" in compare
