"""Progress: bars in a terminal, one line per finished run when piped or logged."""

from __future__ import annotations

import io

from rich.console import Console

from dropkit.experiments.progress import Progress, run_summary


def _console(terminal: bool) -> Console:
    return Console(file=io.StringIO(), force_terminal=terminal, width=100)


def test_piped_output_prints_one_line_per_finished_run():
    console = _console(terminal=False)
    with Progress(12, 2, quiet=False, console=console) as bar:
        bar.start_run("wide-mlp/none/p=0/seed=0", 3)
        for e in range(1, 4):
            bar.epoch(e, 3)
        bar.run_done("wide-mlp/none/p=0/seed=0", "test 0.580  2.0 s")  # as the runner does
        # runs finished in worker processes, out of order
        bar.run_done("wide-mlp/dropout/p=0.5/seed=1", "test 0.612  4.1 s")
        bar.run_done("wide-mlp/dropout/p=0.5/seed=0", "test 0.608  3.9 s")
    lines = console.file.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0] == "[ 3/12] wide-mlp/none/p=0/seed=0  test 0.580  2.0 s"
    assert lines[1] == "[ 4/12] wide-mlp/dropout/p=0.5/seed=1  test 0.612  4.1 s"
    assert lines[2] == "[ 5/12] wide-mlp/dropout/p=0.5/seed=0  test 0.608  3.9 s"
    assert bar.done == 5


def test_a_long_line_is_not_wrapped():
    console = Console(file=io.StringIO(), force_terminal=False, width=40)
    with Progress(1, 0, quiet=False, console=console) as bar:
        bar.run_done("a-very-long-model-name/dropout+maxnorm/p=0.5/seed=0", "test 0.612  4.1 s")
    assert console.file.getvalue().count("\n") == 1


def test_terminal_draws_bars_and_counts_every_kind_of_finish():
    console = _console(terminal=True)
    with Progress(3, 0, quiet=False, console=console) as bar:
        bar.start_run("k0", 2)
        bar.epoch(1, 2)
        bar.run_done("k0", "test 0.5  1.0 s")
        bar.run_done("k2", "test 0.5  1.0 s")
        assert bar._progress.tasks[0].completed == 2
    out = console.file.getvalue()
    assert "runs" in out and "[1/3] k0" not in out  # bars, not the log lines
    assert bar.done == 2


def test_quiet_prints_nothing(capsys):
    with Progress(2, 0, quiet=True) as bar:
        bar.start_run("k", 1)
        bar.epoch(1, 1)
        bar.run_done("k", "x")
        bar.run_done("k2", "x")
    assert capsys.readouterr().out == "" and bar.done == 2


def test_default_console_when_piped_prints_lines(capsys):
    # under pytest stdout is a pipe, as in `dropkit run | tee log`
    with Progress(1, 0, quiet=False) as bar:
        bar.run_done("wide-mlp/none/p=0/seed=0", run_summary({"test_acc": 0.6123, "seconds": 4.06}))
    assert capsys.readouterr().out == "[1/1] wide-mlp/none/p=0/seed=0  test 0.612  4.1 s\n"
