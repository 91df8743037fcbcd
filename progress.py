"""Progress of long steps on stderr: a bar on a terminal, a line every so often elsewhere.

Every long step (extract's takes, adapt's frames and training steps, a fit's epochs, a
sweep's runs) reports through ``task``, and nothing is shown until ``configure`` turns
reporting on (the ``skill`` command does, unless ``--quiet``), so library calls and tests stay
silent. On a terminal each step is a rich bar; elsewhere (a log file, a batch scheduler, a
pipe) it prints a line when it starts, every ``every_s`` seconds or tenth of the work, and when
it ends (``extracting: 12/48 takes (25%), 1.9 s/take, ETA 1:09; 0 failed``). Under torchrun
only rank 0 reports. This module imports nothing heavy (rich only for a bar), so every room may
use it.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time

DEFAULT_EVERY_S = 30.0
"""Seconds between two progress lines of a step when stderr is not a terminal."""
LINE_FRACTION = 0.1
"""A step also prints a line each time this fraction of it more is done."""


class _Settings:
    """What `configure` set, and the interrupt lines printed (a plain class: this module
    loads before everything else, and dataclasses costs an import of inspect)."""

    enabled = False
    every_s = DEFAULT_EVERY_S
    interrupts_reported = 0


_settings = _Settings()


def configure(enabled: bool = True, every_s: float = DEFAULT_EVERY_S) -> None:
    """Turn reporting on or off for the steps that start from now on; ``every_s``: seconds
    between progress lines when stderr is not a terminal (0: a line at every update)."""
    if every_s < 0:
        raise ValueError(f"every_s must be >= 0, got {every_s}")
    _settings.enabled, _settings.every_s = enabled, float(every_s)


def mode() -> str:
    """How a step starting now reports: ``off``, ``bar`` (stderr is a terminal) or ``lines``."""
    if not _settings.enabled or os.environ.get("RANK", "0") != "0":
        return "off"
    isatty = getattr(sys.stderr, "isatty", None)
    return "bar" if isatty is not None and isatty() else "lines"


def say(line: str) -> None:
    """Print one line of progress on stderr (above the bars on a terminal); nothing when
    reporting is off."""
    if mode() == "off":
        return
    if _display is not None:
        _display.console.print(line, markup=False, highlight=False, soft_wrap=True)
    else:
        _write_line(line)


def interrupted(line: str = "interrupted") -> None:
    """Print the one line of a command stopped by Ctrl-C (always, even with --quiet), and
    count it, so that the entry point does not print another."""
    _settings.interrupts_reported += 1
    _write_line(line)


def interrupts_reported() -> int:
    """How many times ``interrupted`` has printed its line in this process."""
    return _settings.interrupts_reported


def _write_line(line: str) -> None:
    # stderr may be closed (a pipe whose reader went away): progress is never worth a crash
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


# ---- steps -----------------------------------------------------------------------------------
class Task:
    """One long step: ``update(done)`` as it goes, in whole units of ``total`` (None: not
    known). A context manager; leaving it with an exception shows nothing more (an interrupted
    command says one line, its own)."""

    def __init__(self, what: str, total: int | None, unit: str, done: int = 0):
        self.what, self.total, self.unit = what, total, unit
        self.done, self.note = done, ""
        self._first = done  # units done before this run (a resumed step): not in the rate
        self._started = time.monotonic()
        self._mode = mode()
        self._every_s = _settings.every_s
        self._last_line_at = self._started
        self._last_tenth = self._tenth()
        self._last_line_done = done
        self._bar_id = None
        self._open = False  # updates outside the `with` block show nothing

    def __enter__(self) -> Task:
        self._open = True
        if self._mode == "lines":
            self._line(start=True)
        elif self._mode == "bar":
            self._bar_id = _bar().add(self)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._open = False
        if self._mode == "bar":
            if exc_type is None:
                _bar().refresh(self._bar_id, self, ended=True)
            _bar().remove(self._bar_id, keep=exc_type is None)
        elif self._mode == "lines" and exc_type is None and self.done != self._last_line_done:
            self._line(ended=True)  # e.g. a fit stopped early: how far it went, and in what time

    def update(self, done: int, note: str | None = None, total: int | None = None) -> None:
        """``done`` units of ``total`` are done; ``note``: the step's own figures (a
        validation score, failures), shown after the rate."""
        self.done = done
        if note is not None:
            self.note = note
        if total is not None:
            self.total = total
        if not self._open:
            return
        if self._mode == "bar":
            _bar().refresh(self._bar_id, self)
        elif self._mode == "lines" and self._line_due():
            self._line()

    def advance(self, count: int = 1, note: str | None = None) -> None:
        self.update(self.done + count, note)

    # ---- what is shown
    def _tenth(self) -> int:
        if not self.total:
            return 0
        return math.floor(self.done / self.total / LINE_FRACTION + 1e-9)

    def _line_due(self) -> bool:
        """A line when units were done since the last one and the step has ended, another
        tenth of it is done or ``every_s`` seconds have passed."""
        if self.done == self._last_line_done:
            return False
        finished = self.total is not None and self.done >= self.total
        waited = time.monotonic() - self._last_line_at >= self._every_s
        return finished or waited or self._tenth() > self._last_tenth

    def _line(self, start: bool = False, ended: bool = False) -> None:
        self._last_line_at, self._last_tenth = time.monotonic(), self._tenth()
        self._last_line_done = self.done
        if start:
            line = f"{self.what}: {self.count_text()}"
        else:
            times = self.time_text(ended)
            line = f"{self.what}: {self.count_text()}, {self.rate_text()}, {times}"
        _write_line(f"{line}; {self.note}" if self.note else line)

    def count_text(self) -> str:
        """``12/48 takes (25%)``, or ``12 takes`` when the total is not known."""
        units = f"{self.unit}s"
        if not self.total:
            return f"{self.done} {units}"
        return f"{self.done}/{self.total} {units} ({100 * self.done / self.total:.0f}%)"

    def rate_text(self) -> str:
        """``3.2 takes/s``, or ``41 s/epoch`` for slow steps; ``-`` before the first unit."""
        seconds, count = time.monotonic() - self._started, self.done - self._first
        if count <= 0 or seconds <= 0:
            return f"- {self.unit}s/s"
        per_second = count / seconds
        if per_second >= 1:
            return f"{_figure(per_second)} {self.unit}s/s"
        return f"{_figure(seconds / count)} s/{self.unit}"

    def time_text(self, ended: bool = False) -> str:
        """``ETA 1:09`` while running, ``in 4:12`` once every unit is done or it `ended`."""
        seconds, count = time.monotonic() - self._started, self.done - self._first
        if ended or (self.total is not None and self.done >= self.total):
            return f"in {_clock(seconds)}"
        if not self.total or count <= 0:
            return "ETA -"
        return f"ETA {_clock((self.total - self.done) * seconds / count)}"


def task(what: str, total: int | None, unit: str, done: int = 0) -> Task:
    """A step of ``total`` units called ``unit`` (singular: ``take``, ``epoch``), ``done``
    of them already done before it starts; use as ``with task(...) as step: step.update(n)``."""
    return Task(what, total, unit, done)


def _figure(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}" if value >= 1 else f"{value:.2f}"


def _clock(seconds: float) -> str:
    """``1:09`` or ``2:03:09``."""
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


# ---- the bar on a terminal ---------------------------------------------------------------
class _Bars:
    """One rich display shared by every open step: a step opened inside another (a sweep's
    fit) is a second row, removed when it ends; the display stops with the last step."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            TextColumn("{task.fields[count]}", markup=False),
            TextColumn("{task.fields[rate]}", markup=False),
            TextColumn("{task.fields[eta]}", markup=False),
            TextColumn("{task.fields[note]}", markup=False),
            console=self.console,
        )
        self.open = 0

    def add(self, step: Task):
        if self.open == 0:
            self.progress.start()
        self.open += 1
        return self.progress.add_task(step.what, total=step.total, **self._fields(step))

    def refresh(self, bar_id, step: Task, ended: bool = False) -> None:
        fields = self._fields(step, ended)
        self.progress.update(bar_id, completed=step.done, total=step.total, **fields)

    def remove(self, bar_id, keep: bool) -> None:
        """A step ended: its row stays only if it is the last one and ended well."""
        global _display
        self.open -= 1
        if self.open > 0 or not keep:
            self.progress.remove_task(bar_id)
        if self.open == 0:
            self.progress.stop()
            _display = None

    @staticmethod
    def _fields(step: Task, ended: bool = False) -> dict:
        return {"count": step.count_text(), "rate": step.rate_text(),
                "eta": step.time_text(ended), "note": step.note}  # fmt: skip


_display: _Bars | None = None


def _bar() -> _Bars:
    global _display
    if _display is None:
        _display = _Bars()
    return _display
