"""Live progress for the commands that take a while: migrate, demo, extract, receive.

On a terminal, ``rich`` draws a bar that updates in place; elsewhere (a pipe,
a log file, a test) and whenever ``NO_COLOR`` is set, one plain line is
printed per interval instead, so logs stay readable and diffable.  The text
of both comes from the pure ``describe_*`` functions below.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING, Self, TextIO

if TYPE_CHECKING:  # only a type here: extract and receive start without the migration package
    from ..migration.stats import PassProgress

MiB = 1 << 20
PLAIN_INTERVAL = 1.0  # seconds between two plain lines


def live_allowed(stream: TextIO) -> bool:
    """Draw in place only on a terminal, and never when ``NO_COLOR`` asks for plain text."""
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def describe_migration(p: PassProgress, status: str) -> str:
    """``active     round 3: 45% of 12.0 MiB, 7.9 MiB/s, 6.6 MiB remaining, ...``."""
    return f"{status:<10} {p.describe()}"


def describe_bytes(done: int, total: int | None, elapsed: float) -> str:
    """``read 120.0 of 512.0 MiB (23%), 85.3 MiB/s``: a stream being read."""
    rate = done / elapsed / MiB if elapsed > 0 else 0.0
    if total:
        return (f"read {done / MiB:.1f} of {total / MiB:.1f} MiB "
                f"({done * 100 / total:.0f}%), {rate:.1f} MiB/s")
    return f"read {done / MiB:.1f} MiB, {rate:.1f} MiB/s"


class _Display:
    """One progress display: a rich bar on a terminal, plain lines elsewhere."""

    def __init__(self, title: str, stream: TextIO, indent: str = "") -> None:
        self.stream = stream
        self.indent = indent
        self.live = live_allowed(stream)
        self.started = time.monotonic()
        self._last_line = self.started
        self._progress = None
        if self.live:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn(indent + "{task.description}"), BarColumn(bar_width=24),
                TextColumn("{task.fields[text]}"), TimeElapsedColumn(),
                console=Console(file=stream), transient=True)
            self._task = self._progress.add_task(title, total=100, text="")
            self._progress.start()

    def show(self, percent: float | None, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=percent or 0, text=text)
            return
        now = time.monotonic()
        if now - self._last_line >= PLAIN_INTERVAL * 0.95:
            self._last_line = now
            self.stream.write(f"{self.indent}{now - self.started:5.1f} s  {text}\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own, above the bar on a terminal."""
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MigrationDisplay(_Display):
    """Progress of one outgoing migration (``migrate``, ``demo``)."""

    def update(self, p: PassProgress, status: str) -> None:
        self.show(p.fraction * 100, describe_migration(p, status))


class ReadDisplay(_Display):
    """Progress of a stream being read (``extract``, ``receive``)."""

    def __init__(self, title: str, total: int | None, stream: TextIO = sys.stderr) -> None:
        super().__init__(title, stream)
        self.total = total

    def update(self, done: int) -> None:
        percent = done * 100 / self.total if self.total else None
        self.show(percent, describe_bytes(done, self.total, time.monotonic() - self.started))
