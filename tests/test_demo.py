"""`dropkit demo`: the tutorial check prints consistent train/eval expectations."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from dropkit.cli import main


def test_demo_shows_both_formulations_and_the_bug(capsys):
    assert main(["demo", "--p", "0.5", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("-> consistent") == 2
    assert "MISMATCH" not in out
    assert "2.00" in out and "0.50" in out  # inverted kept value, classic eval value
    wrong = re.search(r"E\[train output\] ~ ([\d.]+) but eval output = ([\d.]+)", out)
    assert wrong is not None
    assert abs(float(wrong.group(1)) - 1.0) < 0.02 and float(wrong.group(2)) == 0.5


def test_demo_rejects_bad_p_in_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--p", "1.5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "expected 0 <= p <= 1, got 1.5" in err
    assert "Traceback" not in err


def test_console_entry_point_runs_the_demo():
    # the installed entry point, as a user types it: a real run, not just --help
    done = subprocess.run(
        [sys.executable, "-m", "dropkit", "demo", "--p", "0.2", "--seed", "1"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "p=0.2" in out and out.count("-> consistent") == 2
    assert "1/(1-p) = 1.25" in out and "x*(1-p) = 0.80" in out
    # the dropped count printed for one draw of 25 is a count, and the kept
    # entries of the inverted draw are 1/(1-p)
    counts = [int(c) for c in re.findall(r"one draw, (\d+) of 25 dropped", out)]
    assert len(counts) == 2 and all(0 <= c <= 25 for c in counts)
    assert "1.25" in out.split("== classic")[0].split("train mode")[1]
    unknown = subprocess.run(
        [sys.executable, "-m", "dropkit", "dmeo"], capture_output=True, text=True, check=False
    )
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr
