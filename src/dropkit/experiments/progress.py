"""Progress of ``dropkit run``: bars in a terminal, one line per finished run elsewhere.

In a terminal, rich draws two bars (the runs; the current run's epochs) that
redraw in place. Piped into a file or a CI log, redrawn bars would show
nothing until the end, so there each finished run prints one line instead::

    [ 3/12] wide-mlp/dropout/p=0.5/seed=1  test 0.612  4.1 s
"""

from __future__ import annotations

from typing import Any


def run_summary(record: dict[str, Any]) -> str:
    """``"test 0.612  4.1 s"``: the line :meth:`Progress.run_done` prints after a run's key."""
    parts = []
    if isinstance(record.get("test_acc"), float):
        parts.append(f"test {record['test_acc']:.3f}")
    if isinstance(record.get("seconds"), int | float):
        parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


class Progress:
    """Progress of the runs of one experiment (nothing at all when ``quiet``).

    Runs in this process report ``start_run`` and ``epoch`` (the epoch bar); every
    finished run, here or in a worker process (in any order), reports ``run_done``.
    """

    def __init__(
        self, total_runs: int, done_runs: int, *, quiet: bool, console: Any = None
    ) -> None:
        self.quiet = quiet
        self.total = total_runs
        self.done = done_runs
        if quiet:
            return
        from rich.console import Console

        self.console = console if console is not None else Console()
        # Not a terminal (a pipe, a log file): bars that redraw in place would
        # print nothing until the end, so print a line per finished run.
        self.lines = not self.console.is_terminal
        if self.lines:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        self._progress = RichProgress(
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
        )
        self._runs = self._progress.add_task("runs", total=total_runs, completed=done_runs)
        self._epochs = self._progress.add_task("epochs", total=1, visible=False)

    @property
    def _bars(self) -> bool:
        return not self.quiet and not self.lines

    def __enter__(self) -> Progress:
        if self._bars:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bars:
            self._progress.__exit__(*exc)

    def start_run(self, key: str, epochs: int) -> None:
        """A run of ``epochs`` epochs starts in this process."""
        if self._bars:
            self._progress.reset(
                self._epochs, total=epochs, completed=0, description=key, visible=True
            )

    def epoch(self, epoch: int, epochs: int) -> None:
        """Epoch ``epoch`` of ``epochs`` of the current run is done."""
        if self._bars:
            self._progress.update(self._epochs, completed=epoch, total=epochs)

    def run_done(self, key: str, summary: str) -> None:
        """The run ``key`` is done (here or in a worker, in any order): count it, and
        print ``[done/total] key  summary`` when the output is not a terminal."""
        self.done += 1
        if self.quiet:
            return
        if self.lines:
            width = len(str(self.total))
            line = f"[{self.done:>{width}}/{self.total}] {key}"
            text = f"{line}  {summary}" if summary else line
            # one line, as written: no markup, no highlighting, no wrapping at 80 columns
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)
        else:
            self._progress.advance(self._runs)
