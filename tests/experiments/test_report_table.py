"""The terminal table never cuts a number: it wraps titles or goes vertical instead."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pytest
from rich.console import Console

from dropkit.experiments.report import print_table, table_strings

_NUM = re.compile(r"^[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?$")


def _exp(name: str) -> SimpleNamespace:
    """What print_table reads of an experiment."""
    return SimpleNamespace(name=name, table_caption="mean ± std over seeds")


def _wide_tables() -> dict[str, list[dict]]:
    """Rows shaped like uncertainty's, batchnorm's and convergence's tables."""
    uncertainty = [
        {"dataset": "mnist1d", "model": model, "regularizer": "dropout", "p": p, "n": 3}
        | {
            title: (0.1234 * (i + 1) + p, 0.0051 * (i + 1))
            for i, title in enumerate(
                ["acc det", "acc MC", "NLL det", "NLL MC", "ECE det", "ECE MC",
                 "AUROC H det", "AUROC H MC", "AUROC MI MC", "train_acc"]
            )
        }
        for model in ("wide-mlp", "tutorial-mlp")
        for p in (0.2, 0.5)
    ]
    batchnorm = [
        {
            "model": model,
            "variant": variant,
            "p": p,
            "n": 2,
            "test_acc": (0.8123 + p / 10, 0.0123),
            "train_acc": (0.9456, 0.0045),
            "var ratio eval/train per BN": "0.40, 0.16, 0.04",
            "eval var / running var per BN": "0.41, 0.09, 0.02",
        }
        for model in ("mlp-bn", "cnn1d-bn")
        for variant, p in (("none", 0.0), ("before-bn", 0.5), ("before-bn+recalibrate", 0.5))
    ]
    convergence = [
        {
            "model": "wide-mlp",
            "variant": f"{impl} dropout p=0.5",
            "n": 2,
            "test_acc": (0.6789, 0.0123),
            "train_acc": (0.9876, 0.0021),
            "reached": "2/2",
            "epochs_to_target": (12.5, 1.5),
            "seconds_to_target": (23.456, 2.345),
            "s_per_epoch": (1.876, 0.054),
        }
        for impl in ("torch", "dropkit")
    ] + [
        {
            "model": "mlp-2048 batch 100",
            "variant": "timing: dropkit dropout p=0.5",
            "n": 1,
            "step_ms_none": 12.345,
            "step_ms": 14.567,
            "dropout_ms": 2.222,
            "dropout_alone_ms": 1.987,
            "dropout_share": "15%",
        }
    ]
    return {"uncertainty": uncertainty, "batchnorm": batchnorm, "convergence": convergence}


def _expected_numbers(table: list[dict]) -> list[str]:
    hidden = {"val_acc", "stopped_epoch", "test_loss", "n", "dataset", "seconds"}
    _, rows = table_strings([{k: v for k, v in r.items() if k not in hidden} for r in table])
    tokens = [t for row in rows for cell in row for t in re.split(r"[ ,±/]+", cell)]
    return [t for t in tokens if _NUM.match(t)]


def _assert_every_number_in_full(out: str, table: list[dict]) -> None:
    assert "…" not in out and "..." not in out
    tokens = set(re.findall(r"[\w.%+-]+", out.replace("±", " ")))
    for number in _expected_numbers(table):
        assert number in tokens, f"{number} cut or missing in:\n{out}"


@pytest.mark.parametrize("name", ["uncertainty", "batchnorm", "convergence"])
@pytest.mark.parametrize("width", [60, 80, 100, 120, 200])
def test_every_number_appears_in_full(name, width, tmp_path):
    table = _wide_tables()[name]
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    print_table(_exp(name), table, ["A reading."], tmp_path, console=console)
    out = console.file.getvalue()
    _assert_every_number_in_full(out, table)
    assert max(len(line) for line in out.splitlines()) <= width


@pytest.mark.parametrize("name", ["uncertainty", "batchnorm", "convergence"])
def test_piped_output_shows_every_number(name, tmp_path, capsys):
    table = _wide_tables()[name]
    print_table(_exp(name), table, [], tmp_path)  # stdout is a pipe here
    _assert_every_number_in_full(capsys.readouterr().out, table)


def test_a_table_that_fits_stays_a_table(tmp_path):
    table = _wide_tables()["batchnorm"]
    console = Console(file=io.StringIO(), width=120, force_terminal=False)
    print_table(_exp("batchnorm"), table, [], tmp_path, console=console)
    out = console.file.getvalue()
    # one row per line, its p (0.5) beside its accuracy
    assert re.search(r"cnn1d-bn +before-bn +0\.5 +0\.862 ± 0\.012", out), out


def test_rows_with_other_columns_get_their_own_table(tmp_path):
    table = _wide_tables()["convergence"]
    console = Console(file=io.StringIO(), width=200, force_terminal=False)
    print_table(_exp("convergence"), table, [], tmp_path, console=console)
    out = console.file.getvalue()
    assert out.count("model") == 2  # a header per block
    assert re.search(r"timing: dropkit dropout p=0\.5 +12\.345 +14\.567", out), out
