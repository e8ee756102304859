"""How far a long loop has got, told to whoever listens: the command line draws a bar from it.

Code with a loop that may take seconds (decoding a test set, ...) calls :func:`report` with
what it has done so far. Nobody listens by default, and a report then costs one lookup. A
command installs a listener around a call with :func:`listening` (``seqapp evaluate`` and
``export`` pass one that draws a progress bar on a terminal), so the code that loops never
knows how, or whether, its progress is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# listener(what, done, total): ``what`` names the loop ("beam 5 decoding"), ``done`` of ``total``
# items (None: the total is not known) are finished
Listener = Callable[[str, int, "int | None"], None]

_listener: ContextVar[Listener | None] = ContextVar("seqapp_progress_listener", default=None)


def report(what: str, done: int, total: int | None = None) -> None:
    """Tell the listener, if there is one, that ``done`` of ``total`` items of ``what`` are finished."""
    listener = _listener.get()
    if listener is not None:
        listener(what, done, total)


@contextmanager
def listening(listener: Listener | None) -> Iterator[None]:
    """Send every :func:`report` made inside the block (in this thread) to ``listener``; None: to nobody."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)
