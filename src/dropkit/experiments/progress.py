"""Progress bars for ``dropkit run``: one for the runs, one for the current run's epochs."""

from __future__ import annotations

from typing import Any


class Progress:
    """A rich progress display (nothing at all when ``quiet``)."""

    def __init__(self, total_runs: int, done_runs: int, *, quiet: bool, console: Any = None):
        self.quiet = quiet
        if quiet:
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
            console=console,
        )
        self._runs = self._progress.add_task("runs", total=total_runs, completed=done_runs)
        self._epochs = self._progress.add_task("epochs", total=1, visible=False)

    def __enter__(self) -> Progress:
        if not self.quiet:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if not self.quiet:
            self._progress.__exit__(*exc)

    def start_run(self, key: str, epochs: int) -> None:
        if not self.quiet:
            self._progress.reset(
                self._epochs, total=epochs, completed=0, description=key, visible=True
            )

    def epoch(self, epoch: int, epochs: int) -> None:
        if not self.quiet:
            self._progress.update(self._epochs, completed=epoch, total=epochs)

    def end_run(self) -> None:
        if not self.quiet:
            self._progress.advance(self._runs)
