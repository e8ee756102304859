"""The inference engines a run answers on, chosen the same way by every command and the server.

``auto`` takes the run's LiteRT graphs when it has them (fast, no TensorFlow), else ``tf``;
``litert`` insists on them; ``tf`` is Keras on TensorFlow. TensorFlow is started only when the
chosen engine is ``tf``, so a LiteRT answer never pays for its import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from seqapp import backend
from seqapp.errors import SeqappError

if TYPE_CHECKING:
    from seqapp.runs import Run

ENGINES = ("auto", "litert", "tf")


def check_engine(requested: str) -> None:
    """Refuse an engine name that is not one of :data:`ENGINES` (cheap: before anything loads)."""
    if requested not in ENGINES:
        raise SeqappError(f"--engine {requested!r} is not known; use {', '.join(ENGINES[:-1])} or {ENGINES[-1]}")


def choose_engine(task: Any, run: Run, requested: str) -> str:
    """The engine ``task`` runs ``run`` on (the task decides what ``auto`` means for the run), or a
    SeqappError when ``requested`` cannot be had; nothing is started (cheap)."""
    check_engine(requested)
    return task.engine(run, requested)


def start_engine(task: Any, run: Run, requested: str) -> str:
    """:func:`choose_engine`, then TensorFlow started when the engine is ``tf``."""
    engine = choose_engine(task, run, requested)
    if engine == "tf":
        backend.start()
    return engine
