"""seqapp: train and use recurrent neural networks on sequence data.

From Python, :func:`load` a run and answer with it (see docs/python.md)::

    import seqapp

    model = seqapp.load("runs")            # the latest run, or a run folder
    model.predict(["what a lovely film"])  # [{'text': ..., 'label': ..., 'probability': ...}]

Importing the package loads nothing heavy: :func:`load` imports what a run needs when it is
called, and TensorFlow only for a run without LiteRT graphs (or ``engine="tf"``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqapp.errors import SeqappError
from seqapp.version import __version__

if TYPE_CHECKING:
    import os

    from seqapp.api import LoadedRun

__all__ = ["SeqappError", "__version__", "load"]


def load(run: str | os.PathLike | None = None, *, task: str | None = None, engine: str = "auto") -> LoadedRun:
    """A run loaded once for ``predict(texts, ...)`` or ``generate(seed, ...)``: ``run`` is a run
    folder or a folder of runs (its latest run, of ``task`` when given); None: ``$SEQAPP_RUNS``,
    else ``./runs``. ``engine``: auto, litert or tf, as the commands' ``--engine``. Problems
    raise :class:`SeqappError` with the message the command line prints. See
    :func:`seqapp.api.load`."""
    from seqapp import api

    return api.load(run, task=task, engine=engine)
