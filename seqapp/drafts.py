"""Drafts: trainings in progress or interrupted, each in a hidden folder beside the runs.

``<out>/<task>/.partial-<YYYYmmdd-HHMMSS>[-name]-<pid>/`` holds ``draft.json`` (the run's
name), ``config.yaml``, ``preprocessing.json``, the training state (``training-state.npz``,
see :mod:`seqapp.checkpoint`) and, at the end, everything a run holds. When the run is
complete the folder is renamed into place as ``<out>/<task>/<YYYYmmdd-HHMMSS>[-name]``, so
a killed process never leaves a half-written run where a good one stood.

An interrupted draft that saved a state is kept for ``seqapp train --resume``; one with
nothing to resume is removed. A training holds a lock on its draft, so two processes never
write the same one. This module needs no TensorFlow: ``seqapp runs --drafts`` is instant.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqapp import __version__, files
from seqapp import config as config_mod
from seqapp.config import Config
from seqapp.errors import SeqappError

PREFIX = ".partial-"
STATE_FILE = "training-state.npz"
INFO_FILE = "draft.json"


class Interrupted(KeyboardInterrupt):
    """A training stopped by SIGINT or SIGTERM; ``saved`` when its state was saved just now."""

    def __init__(self, signum: int, saved: bool = False) -> None:
        super().__init__(signum)
        self.signum, self.saved = signum, saved
        self.draft: Path | None = None


@dataclass
class Draft:
    """A training's folder, locked by this process while it trains."""

    path: Path
    name: str | None
    final: Path | None = None
    _lock: Any = field(default=None, repr=False)

    def has_state(self) -> bool:
        return (self.path / STATE_FILE).exists()

    def lock(self) -> None:
        handle = open(self.path / ".lock", "a+")  # noqa: SIM115 (held open: it is the lock)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise SeqappError(f"{self.path} is being trained by another seqapp process; wait for it "
                              "or stop it first") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def start(out: Path, cfg: Config, name: str | None) -> Draft:
    """A new, locked draft for a training of ``cfg``, its config and name saved."""
    files.check_name(name)
    task_dir = task_folder(out, cfg.task)
    path = task_dir / f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S')}{f'-{name}' if name else ''}-{os.getpid()}"
    try:
        path.mkdir()
    except OSError as exc:
        raise SeqappError(f"cannot create a run folder in {task_dir} ({exc.strerror or exc}); "
                          "choose a writable folder with --out") from None
    draft = Draft(path=path, name=name)
    draft.lock()
    files.write_json(path / INFO_FILE, {"name": name, "task": cfg.task, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "seqapp": __version__})
    config_mod.save(cfg, path / "config.yaml")
    return draft


def task_folder(out: Path, task: str) -> Path:
    """``<out>/<task>``, created if needed and checked writable; one clear line if it cannot be."""
    task_dir = Path(out) / task
    try:
        task_dir.mkdir(parents=True, exist_ok=True)
        probe = task_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SeqappError(f"cannot write runs in {task_dir} ({exc.strerror or exc}); "
                          "choose a writable folder with --out") from None
    return task_dir


def open_draft(path: Path) -> Draft:
    """The interrupted training in ``path``, locked for this process."""
    path = Path(path)
    if not path.is_dir():
        raise SeqappError(f"{path} does not exist; list interrupted trainings with 'seqapp runs --drafts'")
    if not (path / INFO_FILE).is_file() or not (path / "config.yaml").is_file():
        raise SeqappError(f"{path} is not a resumable training (no {INFO_FILE} or config.yaml); "
                          "list them with 'seqapp runs --drafts'")
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
        name = info.get("name")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise SeqappError(f"{path / INFO_FILE} cannot be read ({exc}); remove the draft with "
                          "'seqapp runs --clean-drafts'") from None
    draft = Draft(path=path, name=name if isinstance(name, str) else None)
    draft.lock()
    return draft


@contextmanager
def training(draft: Draft) -> Iterator[Draft]:
    """Run a training in ``draft``: keep it when it fails with a state saved, else remove it.

    Errors and interruptions leave with a hint to resume when there is something to resume.
    """
    try:
        yield draft
    except Interrupted as exc:
        exc.draft = keep_or_remove(draft)
        raise
    except KeyboardInterrupt:
        interrupted = Interrupted(2)
        interrupted.draft = keep_or_remove(draft)
        raise interrupted from None
    except SeqappError as exc:
        kept = keep_or_remove(draft)
        if kept is None or not exc.resumable:
            raise
        raise SeqappError(f"{exc}; the training so far is kept: {resume_command(kept)}") from None
    except BaseException:
        keep_or_remove(draft)
        raise
    finally:
        draft.unlock()


def keep_or_remove(draft: Draft) -> Path | None:
    """The draft's path if it holds a state to resume; otherwise it is removed and None returned."""
    if draft.has_state():
        return draft.path
    shutil.rmtree(draft.path, ignore_errors=True)
    return None


def publish(draft: Draft) -> Path:
    """Rename the finished draft into place as a run (the training state is dropped)."""
    (draft.path / STATE_FILE).unlink(missing_ok=True)
    for leftover in (INFO_FILE, ".lock"):
        (draft.path / leftover).unlink(missing_ok=True)
    draft.final = files.unique_name(draft.path.parent, draft.name)
    os.replace(draft.path, draft.final)
    return draft.final


def read_state_meta(path: Path) -> dict | None:
    """The JSON part of a training-state file without reading its arrays; None if absent."""
    if not path.exists():
        return None
    try:
        import numpy as np

        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        raise SeqappError(f"{path} cannot be read ({exc}); remove the draft with 'seqapp runs --clean-drafts'") \
            from None
    if not isinstance(meta, dict):
        raise SeqappError(f"{path} is not a seqapp training state; remove the draft with 'seqapp runs --clean-drafts'")
    return meta


def find(out: Path, task: str | None = None) -> list[Path]:
    """Draft folders under ``out`` (of one task, if given), oldest first."""
    out = Path(out)
    task_dirs = [out / task] if task else [p for p in sorted(out.glob("*")) if p.is_dir()]
    found = [path for task_dir in task_dirs for path in task_dir.glob(f"{PREFIX}*") if path.is_dir()]
    return sorted(found, key=lambda path: path.stat().st_mtime_ns)


def describe(path: Path) -> dict:
    """What ``seqapp runs --drafts`` shows of a draft: task, name, progress, whether it is running."""
    row: dict[str, Any] = {"draft": str(path), "task": path.parent.name, "epoch": None, "step": None,
                           "running": is_locked(path), "resumable": (path / INFO_FILE).is_file()}
    try:
        meta = read_state_meta(path / STATE_FILE)
    except SeqappError as exc:
        return row | {"resumable": False, "problem": str(exc)}
    if meta is not None:
        row |= {"epoch": meta.get("epoch"), "step": meta.get("step"), "done": meta.get("done")}
    return row


def is_locked(path: Path) -> bool:
    """True while a seqapp process trains in ``path``."""
    lock = path / ".lock"
    if not lock.exists():
        return False
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def newest(out: Path) -> Path:
    """The most recently touched draft under ``out`` that no process is training."""
    found = [path for path in find(out) if not is_locked(path) and (path / INFO_FILE).is_file()]
    if not found:
        raise SeqappError(f"no interrupted training in {out}; start one with 'seqapp train TASK'")
    return max(found, key=state_time)


def state_time(path: Path) -> int:
    """When a draft last saved its state (or began, if it never did)."""
    state = path / STATE_FILE
    return (state if state.exists() else path).stat().st_mtime_ns


def clean(out: Path) -> tuple[list[Path], list[Path]]:
    """Delete the drafts under ``out`` no process is training; (removed, skipped as running)."""
    removed, running = [], []
    for path in find(out):
        if is_locked(path):
            running.append(path)
            continue
        shutil.rmtree(path)
        removed.append(path)
    return removed, running


def worker_home(out: Path, index: int) -> Path:
    """Where worker ``index`` (not the chief) of a multi-worker training keeps its drafts: its
    backup, which a resumed training goes on from (``<out>/.workers/`` holds no task's runs,
    so ``seqapp runs`` never lists it)."""
    return Path(out) / ".workers" / f"worker-{index}"


def remove_backup(draft: Path) -> None:
    """Delete a worker's finished draft, then the folders of :func:`worker_home` left empty."""
    shutil.rmtree(draft, ignore_errors=True)
    tidy_home(draft.parent)


def tidy_home(task_dir: Path) -> None:
    """Remove ``<out>/.workers/worker-<i>/<task>`` and the folders above it that are empty."""
    for folder in (task_dir, task_dir.parent, task_dir.parent.parent):
        try:
            folder.rmdir()
        except OSError:  # not empty: another worker's, or a draft still to resume
            return


def resume_command(draft: Path) -> str:
    """The command that goes on with the interrupted training in ``draft``."""
    from seqapp.distribute import cluster

    workers = cluster(os.environ.get("TF_CONFIG"))[0]
    if workers > 1:
        return (f"seqapp launch --workers {workers} -- train --resume {draft} (or that --resume on every "
                "worker: the others go on from their own backups)")
    return f"seqapp train --resume {draft}"
