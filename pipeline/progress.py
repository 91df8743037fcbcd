"""A rich progress bar for takes: rate, ETA and the failure count."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class TakeProgress:
    """Context manager; call it as `progress(done, total, failed)`."""

    def __init__(self, console: Console, what: str, enabled: bool = True):
        self.what = what
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} takes/s"),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self._task = None

    def __enter__(self) -> TakeProgress:
        self._progress.__enter__()
        self._task = self._progress.add_task(self.what, total=None, rate="-", failed=0)
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, done: int, total: int, failed: int) -> None:
        task = self._progress.tasks[0]
        elapsed = task.elapsed or 0.0
        rate = f"{done / elapsed:.2f}" if elapsed > 0 and done else "-"
        self._progress.update(self._task, completed=done, total=total, rate=rate, failed=failed)
