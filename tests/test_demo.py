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


def test_console_entry_point_help():
    out = subprocess.run([sys.executable, "-m", "dropkit", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for command in ("run", "demo", "bench"):
        assert command in out
