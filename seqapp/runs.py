"""Run directories: create, save atomically, load, find the latest, read the history, delete.

A run lives in ``<out>/<task>/<YYYYmmdd-HHMMSS>[-name]/`` and holds ``model.keras``,
``preprocessing.json``, ``config.yaml``, ``metrics.json``, ``history.csv``, ``plots/`` and
``provenance.json`` (:mod:`seqapp.provenance`). While training, everything is written into
a hidden draft folder beside it (:mod:`seqapp.drafts`), renamed into place only when the run
is complete: a killed process never leaves a half-written run where a good one stood, and
never touches older runs.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqapp.config import Config
from seqapp.errors import SeqappError
from seqapp.files import check_fields, read_json

# Reads a run's config.yaml into a Config. Only the task registry knows each task's settings,
# and runs sit below the tasks, so whoever loads a run passes the registry's reader
# (seqapp.tasks.load_run, latest_run and find_run do).
ConfigReader = Callable[[Path], Config]


@dataclass(frozen=True)
class Schema:
    """The fields a task reads from its runs' ``preprocessing.json`` and ``metrics.json``
    (:func:`seqapp.files.check_fields` specs), declared by the task."""

    preprocessing: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


# The schema of a task's runs, by task name: like ConfigReader, passed in by the task registry.
SchemaOf = Callable[[str], Schema]

log = logging.getLogger("seqapp")

REQUIRED = ("model.keras", "preprocessing.json", "config.yaml")
# A run folder's name: <YYYYmmdd-HHMMSS>[-name][-2] (drafts.rename_free, files.check_name).
RUN_NAME = re.compile(r"\d{8}-\d{6}(-[A-Za-z0-9][A-Za-z0-9._-]*)?")


@dataclass
class Run:
    """A saved (or in-progress) run: its folder, config and preprocessing, model on demand."""

    path: Path
    config: Config
    preprocessing: dict
    _model: Any = field(default=None, repr=False)
    # inference objects built once per run and process (step functions, their compiled samplers)
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    # what its task reads from metrics.json, checked whenever the file is read
    schema: Schema = field(default_factory=Schema, repr=False, compare=False)

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def model(self) -> Any:
        """The trained Keras model, loaded with ``safe_mode=True`` the first time."""
        if self._model is None:
            self._model = load_model(self.path / "model.keras")
        return self._model

    @property
    def metrics(self) -> dict:
        """The metrics saved at the end of training (empty if none), checked against the
        fields the task reads from them (one error line naming the field)."""
        path = self.path / "metrics.json"
        if not path.exists():
            return {}
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise SeqappError(f"{path} is not a JSON object; the run is damaged, train it again")
        check_fields(path, metrics, self.schema.metrics)
        return metrics


def load_model(path: Path) -> Any:
    """A saved Keras model, in safe mode; a damaged or foreign file is one clear error."""
    import keras

    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:  # Keras raises ValueError, OSError, KeyError, TypeError... for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Lambda" in str(exc) and "safe_mode" in str(exc):
            raise SeqappError(f"{path} holds a Lambda layer (arbitrary Python code), which seqapp never loads; "
                              "use a model trained by seqapp") from None
        raise SeqappError(f"{path} cannot be loaded as a Keras model ({reason[:200]}); the run is damaged, "
                          "train it again") from None


def load(path: Path, read_config: ConfigReader, schema_of: SchemaOf | None = None) -> Run:
    """Load the run saved in ``path``, its config read by ``read_config``; a clear error if it
    is not a seqapp run, or (with ``schema_of``) if its preprocessing lacks a field its task reads.

    This is the one place a run's files are read for every command (predict, generate,
    evaluate, export, serve, runs): a damaged file is one line naming it, never a KeyError later.
    """
    path = Path(path)
    if not path.is_dir():
        raise SeqappError(f"run folder {path} does not exist; list runs with 'seqapp runs'")
    missing = [name for name in REQUIRED if not (path / name).exists()]
    if missing:
        raise SeqappError(f"{path} is not a seqapp run (no {missing[0]}); list runs with 'seqapp runs'")
    cfg = read_config(path / "config.yaml")
    prep = read_json(path / "preprocessing.json")
    if not isinstance(prep, dict):
        raise SeqappError(f"{path / 'preprocessing.json'} is not a JSON object; the run is damaged, train it again")
    if prep.get("task", cfg.task) != cfg.task:
        raise SeqappError(f"{path / 'config.yaml'} is a {cfg.task} config but the run holds a {prep['task']} model; "
                          "put the run's own config.yaml back or train again")
    schema = schema_of(cfg.task) if schema_of is not None else Schema()
    check_fields(path / "preprocessing.json", prep, schema.preprocessing)
    return Run(path=path, config=cfg, preprocessing=prep, schema=schema)


def age(run: Path) -> tuple[str, int]:
    """Sort key of a run folder: its timestamp name, then when its model was written.

    Not the config's modification time: editing an old run's config.yaml must not make it
    the latest.
    """
    return run.name[:15], (run / "model.keras").stat().st_mtime_ns


def run_dirs(out: Path, task: str | None = None) -> list[Path]:
    """Complete run folders under ``out`` (optionally of one task), oldest first."""
    out = Path(out)
    task_dirs = [out / task] if task else [p for p in sorted(out.glob("*")) if p.is_dir()]
    found = [
        run
        for task_dir in task_dirs
        for run in task_dir.glob("[0-9]*")
        if run.is_dir() and all((run / name).exists() for name in REQUIRED)
    ]
    return sorted(found, key=age)


def latest(out: Path, read_config: ConfigReader, tasks: str | Sequence[str] | None = None,
           schema_of: SchemaOf | None = None) -> Run:
    """The most recent run under ``out`` (of ``tasks``, one task name or several, if given)."""
    names = [tasks] if isinstance(tasks, str) else list(tasks or [None])
    found = [path for name in names for path in run_dirs(out, name)]
    if not found:
        wanted = " or ".join(name for name in names if name)
        what = f"no {wanted} run" if wanted else "no run"
        raise SeqappError(f"{what} found in {out}; train one first with 'seqapp train {wanted or 'TASK'}' "
                          "or pass --run DIR")
    for path in sorted(found, key=age, reverse=True):
        try:
            return load(path, read_config, schema_of)
        except SeqappError as exc:
            log.warning(f"skipping the damaged run {path}: {exc}")
    raise SeqappError(f"every run found in {out} is damaged (see the warnings); train a new one")


def find(run_dir: Path | None, out: Path, read_config: ConfigReader, tasks: Sequence[str] | None = None,
         schema_of: SchemaOf | None = None) -> Run:
    """The run the user named with ``--run`` (checked against ``tasks``), else the latest one."""
    if run_dir is None:
        return latest(out, read_config, tasks, schema_of)
    run = load(run_dir, read_config, schema_of)
    if tasks and run.task not in tasks:
        raise SeqappError(f"{run_dir} is a {run.task} run; this command needs a {' or '.join(tasks)} run")
    return run


def read_history(path: Path) -> dict[str, list[float | None]]:
    """A run's per-epoch history (``history.csv``) by column, the ``epoch`` column left out; an
    empty cell (a value not logged that epoch) is None. A damaged file is one error naming it."""
    csv_path = Path(path) / "history.csv"
    try:
        with open(csv_path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            rows = list(reader)
        return {key: [float(row[key]) if row.get(key) not in (None, "") else None for row in rows]
                for key in reader.fieldnames or [] if key != "epoch"}
    except FileNotFoundError:
        raise SeqappError(f"{path} has no history.csv; the run is damaged, train it again") from None
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise SeqappError(f"{csv_path} cannot be read ({exc}); the run is damaged, train it again") from None


def is_run_folder(path: Path) -> bool:
    """True for a folder (not a link) named as a run, holding a run's required files: what
    ``seqapp runs --delete`` may remove, damaged or not."""
    path = Path(path)
    return (not path.is_symlink() and path.is_dir() and RUN_NAME.fullmatch(path.name) is not None
            and all((path / name).is_file() for name in REQUIRED))


def remove(path: Path) -> None:
    """Delete the run folder ``path``: first renamed to a hidden name (so a kill half-way never
    leaves half a run that is listed), then removed."""
    path = Path(path)
    hidden = path.with_name(f".removing-{path.name}-{os.getpid()}")
    try:
        os.rename(path, hidden)
    except OSError as exc:
        raise SeqappError(f"cannot delete {path} ({exc.strerror or exc}); check the folder's permissions") from None
    shutil.rmtree(hidden)
