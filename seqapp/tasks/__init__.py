"""The task registry: the one place that knows which tasks exist.

Adding a task means one module in this package, one entry in REGISTRY, one template in
the top-level ``tasks/`` folder, and tests; nothing else (the CLI included) changes.
Task modules import TensorFlow lazily, so importing this registry is cheap.
"""

from __future__ import annotations

import difflib

from seqapp.errors import SeqappError
from seqapp.tasks.base import Task
from seqapp.tasks.regression import Sine
from seqapp.tasks.sentiment import Sentiment
from seqapp.tasks.textgen import TextGen
from seqapp.tasks.translate import Translate

REGISTRY: dict[str, type[Task]] = {
    TextGen.name: TextGen,
    Sine.name: Sine,
    Sentiment.name: Sentiment,
    Translate.name: Translate,
}


def get_task(name: str) -> type[Task]:
    """The task class called ``name``, or a SeqappError that suggests close names."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SeqappError(f"unknown task '{name}'; {hint}known tasks: {', '.join(REGISTRY)}")
