"""The task registry: the one place that knows which tasks exist.

Adding a task means one module in this package, one entry in REGISTRY, one template in
the top-level ``tasks/`` folder, and tests; nothing else (the CLI included) changes.
Task modules import TensorFlow lazily, so importing this registry is cheap.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from seqapp import config, runs
from seqapp.config import Config
from seqapp.errors import SeqappError
from seqapp.runs import Run
from seqapp.tasks.base import Task
from seqapp.tasks.regression import Sine
from seqapp.tasks.sentiment import Sentiment
from seqapp.tasks.tagging import Tagging
from seqapp.tasks.textgen import TextGen
from seqapp.tasks.translate import Translate

REGISTRY: dict[str, type[Task]] = {
    TextGen.name: TextGen,
    Sine.name: Sine,
    Sentiment.name: Sentiment,
    Translate.name: Translate,
    Tagging.name: Tagging,
}


def get_task(name: str) -> type[Task]:
    """The task class called ``name``, or a SeqappError that suggests close names."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise SeqappError(f"unknown task '{name}'; {hint}known tasks: {', '.join(REGISTRY)}")


def load_config(name_or_path: str, overrides: Sequence[str] = (), values: dict | None = None,
                data_file: Path | None = None) -> Config:
    """A template (bundled name or file path) resolved into a validated Config.

    ``overrides`` are ``--set section.key=value`` strings, ``values`` already-typed
    ``section.key`` values; ``data_file`` (``--data``) becomes the task's training data
    the way the task says (:meth:`Task.data_values`).
    """
    path = config.resolve_template(name_or_path)
    source = f"template {path.name}"
    raw = config.read_yaml(path)
    task = get_task(config.task_name(raw, source))
    values = {**(values or {}), **(task.data_values(data_file) if data_file is not None else {})}
    return config.build(raw, task, overrides, source=source, values=values)


def load_saved_config(path: Path) -> Config:
    """A run's saved ``config.yaml`` read back into a Config (errors name the file)."""
    source = f"run config {path}"
    raw = config.read_yaml(path, what="run config")
    return config.build(raw, get_task(config.task_name(raw, source)), source=source)


def run_schema(task: str) -> runs.Schema:
    """What task ``task`` reads from its runs' preprocessing.json and metrics.json (:meth:`Task.schema`)."""
    return get_task(task).schema()


def load_run(path: Path) -> Run:
    """The run saved in ``path`` (:func:`seqapp.runs.load` with this registry's config reader and schemas)."""
    return runs.load(path, load_saved_config, run_schema)


def latest_run(out: Path, tasks: str | Sequence[str] | None = None) -> Run:
    """The most recent readable run under ``out``, of ``tasks`` if given (:func:`seqapp.runs.latest`)."""
    return runs.latest(out, load_saved_config, tasks, run_schema)


def find_run(run_dir: Path | None, out: Path, tasks: Sequence[str] | None = None) -> Run:
    """The run named with ``--run`` (checked against ``tasks``), else the latest (:func:`seqapp.runs.find`)."""
    return runs.find(run_dir, out, load_saved_config, tasks, run_schema)
