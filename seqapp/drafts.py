"""Drafts: trainings in progress or interrupted, each in a hidden folder beside the runs.

``<out>/<task>/.partial-<YYYYmmdd-HHMMSS>[-name]-<pid>/`` holds ``draft.json`` (the run's
name), ``config.yaml``, ``preprocessing.json``, the training state (``training-state.npz``,
see :mod:`seqapp.checkpoint`) and, at the end, everything a run holds. When the run is
complete the folder is renamed into place as ``<out>/<task>/<YYYYmmdd-HHMMSS>[-name]``, so
a killed process never leaves a half-written run where a good one stood.

An interrupted draft that saved a state is kept for ``seqapp train --resume``; one with
nothing to resume is removed. A training holds a lock on its draft, so two processes never
write the same one. ``draft.json`` records the settings the training began with (their
fingerprint, :func:`settings_of`), and the launch it belongs to when ``seqapp launch``
started it (:data:`LAUNCH_ENV`), so a resume can refuse an edited config and a launch can
find its own drafts; and what the run's ``provenance.json`` keeps of its beginning (the
versions, the command line), which :func:`publish` writes before draft.json goes. This
module needs no TensorFlow: ``seqapp runs --drafts`` is instant.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqapp import config as config_mod
from seqapp import faults, files, provenance
from seqapp.config import Config
from seqapp.errors import Interrupted, SeqappError  # Interrupted: drafts.Interrupted, as before
from seqapp.version import __version__

PREFIX = ".partial-"
STATE_FILE = "training-state.npz"
INFO_FILE = "draft.json"
# Set by ``seqapp launch`` for its workers: the launch's id, recorded in each worker's draft.
LAUNCH_ENV = "SEQAPP_LAUNCH_ID"

log = logging.getLogger("seqapp")


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
        self._lock = files.hold_lock(self.path / ".lock", f"{self.path} is being trained by another seqapp "
                                     "process; wait for it or stop it first")

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def start(out: Path, cfg: Config, name: str | None, origin: dict | None = None) -> Draft:
    """A new, locked draft for a training of ``cfg``, its config and name saved, with what the run's
    provenance keeps of its beginning (:func:`seqapp.provenance.began`: versions, command line, and
    ``origin``, the run it repeats or fine-tunes)."""
    files.check_name(name)
    task_dir = task_folder(out, cfg.task)
    stem = f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S')}{f'-{name}' if name else ''}-{os.getpid()}"
    for counter in itertools.count(1):  # a second training of this process within the same second: -2
        path = task_dir / (stem if counter == 1 else f"{stem}-{counter}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
        except OSError as exc:
            raise SeqappError(f"cannot create a run folder in {task_dir} ({exc.strerror or exc}); "
                              "choose a writable folder with --out") from None
    draft = Draft(path=path, name=name)
    draft.lock()
    from seqapp.distribute import cluster

    files.write_json(path / INFO_FILE, {"name": name, "task": cfg.task, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                       "seqapp": __version__, "settings": settings_of(cfg),
                                       "launch": os.environ.get(LAUNCH_ENV) or None,
                                       "workers": cluster(os.environ.get("TF_CONFIG"))[0],
                                       **provenance.began(origin)})
    config_mod.save(cfg, path / "config.yaml")
    return draft


def settings_of(cfg: Config) -> dict:
    """The settings a training runs with, flat (``train.learning_rate``: value), and their
    fingerprint: ``{"sha256": ..., "values": {...}}``. The description is no setting."""
    raw = cfg.to_dict()
    values = {"task": raw["task"]} | {f"{section}.{key}": value for section in config_mod.SECTIONS
                                       for key, value in raw[section].items()}
    values = json.loads(json.dumps(files.finite(values), default=str))  # as JSON keeps them: tuples as lists
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    return {"sha256": digest, "values": values}


def edited_settings(recorded: dict, cfg: Config) -> list[str]:
    """The settings of ``cfg`` that differ from ``recorded`` (:func:`settings_of`), as
    ``key: old -> new``; a setting only one side knows (another seqapp version's) is no edit."""
    current = settings_of(cfg)
    if recorded.get("sha256") == current["sha256"] or not isinstance(recorded.get("values"), dict):
        return []
    before, after = recorded["values"], current["values"]
    changed = [key for key in before if key in after and json.dumps(before[key], sort_keys=True)
               != json.dumps(after[key], sort_keys=True)]
    return [f"{key}: {json.dumps(before[key])} -> {json.dumps(after[key])}" for key in changed]


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
    """The interrupted training in ``path``, locked for this process, checked resumable: readable,
    and its settings as the training began (an edited config.yaml is refused, saying what differs)."""
    path = Path(path)
    if not path.is_dir():
        raise SeqappError(f"{path} does not exist; list interrupted trainings with 'seqapp runs --drafts'")
    if not (path / INFO_FILE).is_file() or not (path / "config.yaml").is_file():
        raise SeqappError(f"{path} is not a resumable training (no {INFO_FILE} or config.yaml); "
                          "list them with 'seqapp runs --drafts'")
    draft = Draft(path=path, name=None)
    draft.lock()
    try:
        meta, problem = state_problem(path / STATE_FILE)
        problem = files_problem(path) or problem
        if problem is not None:
            raise SeqappError(f"{path} cannot be resumed: {problem}; remove it with "
                              f"'seqapp runs --clean-drafts {path}'", resumable=False)
        info = info_problem(path)[0]
        draft.name = info["name"] if isinstance(info.get("name"), str) else None
        check_settings(path, info, meta or {})
    except BaseException:
        draft.unlock()
        raise
    return draft


def info_problem(path: Path) -> tuple[dict, str | None]:
    """``draft.json`` of the draft in ``path`` and why it cannot be read (None if it can)."""
    try:
        info = json.loads((path / INFO_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return {}, f"{INFO_FILE} cannot be read ({exc})"
    if not isinstance(info, dict):
        return {}, f"{INFO_FILE} is not a JSON object"
    return info, None


def check_settings(path: Path, info: dict, meta: dict) -> None:
    """Refuse a draft whose config.yaml no longer holds the settings its training began with
    (recorded in the training state's ``meta``, else in draft.json ``info``; a draft of seqapp
    0.2 or older has none)."""
    recorded = meta.get("settings") or info.get("settings")
    if not isinstance(recorded, dict):
        return
    from seqapp.tasks import load_saved_config

    edits = edited_settings(recorded, load_saved_config(path / "config.yaml"))
    if edits:
        shown = ", ".join(edits[:3]) + (f" and {len(edits) - 3} more" if len(edits) > 3 else "")
        raise SeqappError(f"{path / 'config.yaml'} was edited after this training began ({shown}); a resumed "
                          "training goes on with the settings it began with: restore them in that file, or start "
                          f"a new training with the new ones: seqapp train {path / 'config.yaml'}", resumable=False)


@contextmanager
def training(draft: Draft) -> Iterator[Draft]:
    """Run a training in ``draft``: keep it when it fails with a state saved, else remove it.

    Errors and interruptions leave with a hint to resume when there is something to resume;
    an interruption after :func:`publish` renamed the run into place names the run instead.
    """
    try:
        yield draft
    except Interrupted as exc:
        exc.draft, exc.run = keep_or_remove(draft), published(draft)
        raise
    except KeyboardInterrupt:
        interrupted = Interrupted(2)
        interrupted.draft, interrupted.run = keep_or_remove(draft), published(draft)
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


def published(draft: Draft) -> Path | None:
    """The run :func:`publish` made of ``draft``, if it did."""
    return draft.final if draft.final is not None and draft.final.is_dir() else None


def after_signal(draft: Draft, chief: bool) -> str:
    """What a normal interrupted exit does with ``draft`` (kept when it holds a state, else
    removed; a worker's home tidied), in one line: for a process that must end at once."""
    if not draft.path.exists():  # published a moment ago
        return "interrupted after the training ended"
    kept = keep_or_remove(draft)
    if not chief:
        tidy_home(draft.path.parent)
    if kept is None:
        return "interrupted; nothing was saved"
    return f"interrupted; the training state of the last finished epoch is kept. resume with: {resume_command(kept)}"


def publish(draft: Draft, data: list[dict] | None = None) -> Path:
    """Rename the finished draft into place as a run, then drop what only a training needs.

    First what ``draft.json`` recorded when the training began (the versions, the command line)
    goes into the run's ``provenance.json``, with the ``data`` files the training read
    (:func:`seqapp.provenance.reading`): draft.json itself is a draft's, and goes. The draft,
    its training state included, takes its final name in one rename, to a name no other
    folder holds (:func:`rename_free`); only then is the state deleted. A kill at any moment
    leaves the resumable draft or the complete run (with the state left inside it, at the
    ``publish`` fault point), never neither.
    """
    files.write_json(draft.path / provenance.FILE, provenance.record(info_problem(draft.path)[0], data))
    draft.final = rename_free(draft.path, draft.name)
    faults.point("publish")
    for leftover in (STATE_FILE, INFO_FILE, ".lock"):
        (draft.final / leftover).unlink(missing_ok=True)
    return draft.final


def rename_free(folder: Path, name: str | None, attempts: int = 1000) -> Path:
    """Rename ``folder`` to ``<its parent>/<YYYYmmdd-HHMMSS>[-name]``, or ``...-2``, ``-3``... when
    that is taken; a name taken between the look and the rename is met by the rename itself
    (a folder holding files is never replaced) and the next suffix is tried."""
    stem = time.strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    for counter in itertools.count(1):
        candidate = folder.parent / (stem if counter == 1 else f"{stem}-{counter}")
        if candidate.exists() or candidate.is_symlink():
            continue
        try:
            os.rename(folder, candidate)
            return candidate
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR) or counter >= attempts:
                raise SeqappError(f"cannot rename the finished training {folder} to {candidate} "
                                  f"({exc.strerror or exc}); check the folder's permissions") from None
    raise AssertionError("unreachable")  # pragma: no cover


def state_problem(path: Path) -> tuple[dict | None, str | None]:
    """A training-state file's JSON part (None if there is no file) and why it cannot be used (None if it can).

    The whole file is checked against its checksums, so a damaged array is found here, not
    after TensorFlow has started."""
    if not path.exists():
        return None, None
    try:
        import numpy as np

        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            return None, f"{path.name} is damaged ({bad} fails its checksum)"
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        return None, f"{path.name} cannot be read ({exc})"
    if not isinstance(meta, dict):
        return None, f"{path.name} is not a seqapp training state"
    return meta, None


def read_state_meta(path: Path) -> dict | None:
    """The JSON part of a training-state file (its arrays checked, not loaded); None if absent."""
    meta, problem = state_problem(path)
    if problem is not None:
        raise SeqappError(f"{path.parent} cannot be resumed: {problem}; remove the draft with "
                          f"'seqapp runs --clean-drafts {path.parent}'", resumable=False)
    return meta


def damage(path: Path) -> str | None:
    """Why the draft in ``path`` cannot be read, or None when it can: its draft.json, config.yaml
    and training state are there and readable (whether its settings were edited is another matter)."""
    return files_problem(path) or state_problem(path / STATE_FILE)[1]


def files_problem(path: Path) -> str | None:
    """Why the draft's draft.json or config.yaml cannot be read (None if they can)."""
    for needed in (INFO_FILE, "config.yaml"):
        if not (path / needed).is_file():
            return f"it has no {needed}"
    problem = info_problem(path)[1]
    if problem is not None:
        return problem
    try:
        config_mod.read_yaml(path / "config.yaml", what="run config")
    except SeqappError as exc:
        return str(exc).split("; ")[0]  # the problem, without the advice that fits a template
    return None


def find(out: Path, task: str | None = None) -> list[Path]:
    """Draft folders under ``out`` (of one task, if given), oldest first."""
    out = Path(out)
    task_dirs = [out / task] if task else [p for p in sorted(out.glob("*")) if p.is_dir()]
    found = [path for task_dir in task_dirs for path in task_dir.glob(f"{PREFIX}*") if path.is_dir()]
    return sorted(found, key=state_time)


def describe(path: Path) -> dict:
    """What ``seqapp runs --drafts`` shows of a draft: task, name, progress, whether it is running,
    whether it is damaged (and why), the launch it belongs to."""
    running = is_locked(path)
    problem = None if running else damage(path)
    row: dict[str, Any] = {"draft": str(path), "task": path.parent.name, "epoch": None, "step": None,
                           "running": running, "resumable": problem is None, "damaged": problem is not None,
                           "launch": launch_of(path)}
    if problem is not None:
        return row | {"problem": f"damaged, {problem}; remove it with 'seqapp runs --clean-drafts {path}'"}
    meta = state_problem(path / STATE_FILE)[0]
    if meta is not None:
        row |= {"epoch": meta.get("epoch"), "step": meta.get("step"), "done": meta.get("done")}
    return row


def launch_of(path: Path) -> str | None:
    """The id of the ``seqapp launch`` whose worker started the draft in ``path`` (None: none did, or unknown)."""
    launch = info_problem(path)[0].get("launch")
    return launch if isinstance(launch, str) else None


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


def newest(out: Path, among: list[Path] | None = None) -> Path:
    """The draft under ``out`` (or of ``among``) that saved its state last, no process trains and
    can be read; each damaged one newer than it is skipped with a warning naming it."""
    found = [path for path in (find(out) if among is None else among) if not is_locked(path)]
    skipped = 0
    for path in sorted(found, key=state_time, reverse=True):
        problem = damage(path)
        if problem is None:
            return path
        skipped += 1
        log.warning(f"skipping the damaged draft {path} ({problem}); remove it with "
                    f"'seqapp runs --clean-drafts {path}'")
    note = f" that can be resumed ({skipped} damaged, skipped)" if skipped else ""
    raise SeqappError(f"no interrupted training in {out}{note}; start one with 'seqapp train TASK'")


def state_time(path: Path) -> int:
    """When a draft last saved its state (or began, if it never did); 0 for one gone meanwhile."""
    state = path / STATE_FILE
    try:
        return (state if state.exists() else path).stat().st_mtime_ns
    except OSError:
        return 0


def removable(path: Path) -> Path:
    """``path`` checked to be a draft folder no process trains, for ``--clean-drafts``; one line if not."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise SeqappError(f"{path} does not exist; list the drafts with 'seqapp runs --drafts'")
    if path.is_symlink() or not path.is_dir() or not path.name.startswith(PREFIX):
        raise SeqappError(f"{path} is not a draft (a {PREFIX}* folder that 'seqapp runs --drafts' lists); "
                          "--clean-drafts deletes drafts only, never a run")
    if is_locked(path):
        raise SeqappError(f"{path} is being trained by a seqapp process now; stop that training first "
                          "(nothing was removed)")
    return path


def damaged(out: Path, task: str | None = None) -> list[tuple[Path, str]]:
    """The drafts under ``out`` (of ``task``) no process trains that cannot be read, with why."""
    found = [(path, damage(path)) for path in find(out, task) if not is_locked(path)]
    return [(path, problem) for path, problem in found if problem is not None]


def remove(path: Path) -> None:
    """Delete a draft folder (checked with :func:`removable` first)."""
    shutil.rmtree(path)


def of_launch(out: Path, workers: int) -> tuple[list[Path], dict[Path, str]]:
    """The drafts under ``out`` a launch of ``workers`` workers can resume, newest first: begun by a
    launch of as many workers, no process training them, readable, with every other worker's
    backup of that same launch; and why each other draft is not one."""
    chosen, passed = [], {}
    for path in sorted(find(out), key=state_time, reverse=True):
        info = info_problem(path)[0]
        launch, began = info.get("launch"), info.get("workers")
        problem = "a training is running in it" if is_locked(path) else damage(path)
        if problem is None and not isinstance(launch, str):
            problem = "not begun by 'seqapp launch' (or begun by seqapp 0.2 or older)"
        elif problem is None and began != workers:
            problem = f"begun by a launch of {began} workers"
        if problem is None:
            missing = [index for index in range(1, workers) if not any(
                launch_of(backup) == launch for backup in find(worker_home(out, index), path.parent.name))]
            problem = f"worker {missing[0]}'s backup of it is missing" if missing else None
        if problem is None:
            chosen.append(path)
        else:
            passed[path] = problem
    return chosen, passed


def worker_backup(out: Path, index: int, chief: Path | None) -> Path:
    """The backup worker ``index`` goes on from: the one of the launch that began the chief's
    draft ``chief`` (each draft records it); the newest in :func:`worker_home` for a draft of
    seqapp 0.2 or older, one begun on a cluster without ``seqapp launch``, or a chief's draft
    this machine does not hold."""
    home = worker_home(out, index)
    info = info_problem(chief)[0] if chief is not None else {}
    launch = info.get("launch")
    if isinstance(launch, str):
        own = [path for path in find(home) if launch_of(path) == launch]
        if not own:
            raise SeqappError(f"worker {index} has no backup of the training in {chief} (launch {launch}) under "
                              f"{home}; resume it with as many workers as began it, or start a new training")
        return newest(home, own)
    if info.get("workers") == 1:
        raise SeqappError(f"{chief} was begun by a single process, so worker {index} has no backup of it; "
                          f"resume it alone: seqapp train --resume {chief}")
    return newest(home)


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
