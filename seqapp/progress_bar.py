"""The progress bar of long commands (``evaluate``, ``export``, ``predict`` with beam search).

:func:`progress_bar` wraps a call that may take seconds. When stderr is a terminal and the call
is still running after a second, a bar appears on stderr: one row per loop that reports its
progress (:func:`seqapp.progress.report`: decoding a test set, ...), and with ``spinner`` a
row that shows the time spent even when nothing reports. It is drawn with rich (which Typer
brings along), imported only then, and it leaves nothing behind when done. When stderr is not
a terminal (a pipe, a file, a test), nothing is drawn and rich is not imported.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from seqapp import progress

DELAY_S = 1.0  # a call that ends sooner shows no bar


class Bar:
    """Rows of progress on ``console``, drawn from ``delay_s`` after the start (thread-safe:
    the first row may be drawn by a timer while the work goes on in the main thread)."""

    def __init__(self, description: str, console: Any, spinner: bool = False, delay_s: float = DELAY_S,
                 stdout_too: bool = False) -> None:
        self.description, self.console, self.spinner = description, console, spinner
        self.delay_s, self.stdout_too = delay_s, stdout_too
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.rows: dict[str, tuple[int, int | None]] = {}  # what -> (done, total), as last reported
        self.progress: Any = None
        self.row_ids: dict[str, Any] = {}
        self.closed = False
        self.timer = threading.Timer(delay_s, self.show) if spinner else None
        if self.timer is not None:
            self.timer.daemon = True
            self.timer.start()

    def listen(self, what: str, done: int, total: int | None) -> None:
        """A :data:`seqapp.progress.Listener`: update (or, once the delay is past, draw) the row of ``what``."""
        with self.lock:
            self.rows[what] = (done, total)
            if self.progress is None and time.monotonic() - self.started >= self.delay_s:
                self.start()
            if self.progress is not None:
                self.update(what)

    def show(self) -> None:
        """Draw the bar now, if it is not drawn yet (the spinner's timer calls this)."""
        with self.lock:
            if self.progress is None:
                self.start()

    def start(self) -> None:
        if self.closed:
            return
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        # stdout is redirected above the bar only when it is the terminal too: a file or pipe keeps its output
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[count]}"), TimeElapsedColumn(), console=self.console,
                                 transient=True,
                                 redirect_stdout=self.stdout_too, redirect_stderr=True)
        self.progress.start()
        if self.spinner:
            self.row_ids[""] = self.progress.add_task(self.description, total=None, count="")
        for what in self.rows:
            self.update(what)

    def update(self, what: str) -> None:
        done, total = self.rows[what]
        count = f"{done}/{total}" if total is not None else str(done)
        if what not in self.row_ids:
            self.row_ids[what] = self.progress.add_task(what, total=total, count=count)
        self.progress.update(self.row_ids[what], completed=done, total=total, count=count)

    def close(self) -> None:
        """Stop drawing and take the bar off the terminal."""
        if self.timer is not None:
            self.timer.cancel()
        with self.lock:
            self.closed = True
            if self.progress is not None:
                self.progress.stop()


@contextmanager
def progress_bar(description: str, *, spinner: bool = False, console: Any = None,
                 delay_s: float = DELAY_S) -> Iterator[None]:
    """Show the progress reported inside the block as a bar on stderr when it is a terminal and
    the block takes longer than ``delay_s``; ``spinner``: a row with the time spent from then on,
    even when nothing reports. ``console``: a rich console to draw on instead (for tests)."""
    if console is None:
        if not sys.stderr.isatty():
            yield
            return
        from rich.console import Console

        console = Console(stderr=True)
    bar = Bar(description, console, spinner=spinner, delay_s=delay_s, stdout_too=sys.stdout.isatty())
    try:
        with progress.listening(bar.listen):
            yield
    finally:
        bar.close()
