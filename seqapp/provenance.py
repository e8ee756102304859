"""Provenance: what made a run, kept in its ``provenance.json``.

When a training begins, its draft's ``draft.json`` records the versions of seqapp, Python,
TensorFlow, Keras and NumPy (:func:`versions`), the command line and its folder
(:func:`command`), and the run it repeats (``train --like``) or fine-tunes (``train
--from``). While the task reads its data, every file read is recorded with its path, size
and SHA-256 (:func:`reading`): whatever the task, the bundled defaults and each file of a
folder included. :func:`seqapp.drafts.publish` writes all of it into the run as
``provenance.json`` (:func:`record`).

The devices stay where trainings have always kept them, ``distribute.json``; :func:`read`
shows both, and nulls for what a run made by an earlier seqapp did not record. Nothing here
imports TensorFlow: ``seqapp runs --json`` and the data check of ``train --like``
(:func:`data_changes`) answer at once.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import platform
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqapp import datafiles
from seqapp.errors import SeqappError
from seqapp.files import INTEGER, TEXT, Kind, check_fields, field_problem, list_of, nullable, read_json
from seqapp.version import __version__

FILE = "provenance.json"
DEVICES_FILE = "distribute.json"
FORMAT = 1
LIBRARIES = ("tensorflow", "keras", "numpy")
CHUNK = 1 << 20

log = logging.getLogger("seqapp")

# One data file in provenance.json.
DATA_FILE = {"path": TEXT, "bytes": INTEGER, "sha256": TEXT, "bundled?": nullable(TEXT)}
DATA_RECORD = Kind("a data file record (path, bytes, sha256)",
                   lambda value: field_problem(value, DATA_FILE, "") is None)
# What provenance.json must hold to be shown (its other fields are shown as they are).
FIELDS = {"versions?": {"seqapp?": nullable(TEXT)}, "command?": nullable(TEXT), "cwd?": nullable(TEXT),
          "data?": nullable(list_of(DATA_RECORD)), "like?": nullable(TEXT), "from?": nullable(TEXT)}
SHOWN = ("versions", "command", "cwd", "started", "data", "like", "from")


def versions() -> dict:
    """The versions of seqapp, Python, TensorFlow, Keras and NumPy: those this process has imported,
    else those installed (None for one that is not)."""
    from importlib import metadata

    found = {"seqapp": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        version = getattr(sys.modules.get(name), "__version__", None)
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = None
        found[name] = str(version) if version is not None else None
    return found


def command() -> dict:
    """The command line of this process, as a shell would take it, and the folder it ran in."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else Path("python")
    words = ["python", "-m", script.parent.name] if script.name == "__main__.py" else [script.name]
    return {"command": shlex.join([*words, *sys.argv[1:]]), "cwd": os.getcwd()}


def began(origin: dict | None = None) -> dict:
    """What ``draft.json`` records of a training when it begins: :func:`versions`, :func:`command`,
    and ``origin`` (``{"like": RUN}`` or ``{"from": RUN}``)."""
    return {"versions": versions(), **command(), "like": None, "from": None, **(origin or {})}


@contextmanager
def reading() -> Iterator[list[dict]]:
    """Inside, every file read through :mod:`seqapp.datafiles` is recorded, once: ``path``
    (absolute), ``bytes``, ``sha256``, and ``bundled`` (its name, for a default data file
    shipped with seqapp; else None)."""
    found: list[dict] = []

    def record(path: Path, data: bytes) -> None:
        entry = file_entry(path, len(data), hashlib.sha256(data).hexdigest())
        if entry not in found:
            found.append(entry)

    datafiles.readers.append(record)
    try:
        yield found
    finally:
        datafiles.readers.remove(record)


def file_entry(path: Path, size: int, sha256: str) -> dict:
    absolute = Path(os.path.abspath(path))
    bundled = absolute.name if absolute.parent == Path(os.path.abspath(datafiles.bundled("-"))).parent else None
    return {"path": str(absolute), "bytes": size, "sha256": sha256, "bundled": bundled}


def record(info: dict, data: list[dict] | None) -> dict:
    """The content of ``provenance.json``: what ``draft.json`` (``info``) recorded when the training
    began, the ``data`` files it read, and the versions of the process that finished it where
    they differ (a training resumed after an upgrade)."""
    recorded = info.get("versions") if isinstance(info.get("versions"), dict) else {"seqapp": info.get("seqapp")}
    kept = {"format": FORMAT, "versions": recorded, "command": info.get("command"), "cwd": info.get("cwd"),
            "started": info.get("started"), "data": data, "like": info.get("like"), "from": info.get("from")}
    now = versions()
    if any(recorded.get(name) not in (None, value) for name, value in now.items()):
        kept["finished_with"] = now
    return kept


def read(run: Path) -> dict:
    """What ``seqapp runs --json`` shows of a run's provenance: :data:`SHOWN` from
    ``provenance.json`` and the devices from ``distribute.json``; None for what the run does not
    record. A damaged file is a warning naming it, never a failed listing."""
    shown: dict[str, Any] = dict.fromkeys(SHOWN)
    saved = saved_record(run)
    if saved is not None:
        shown |= {key: saved.get(key) for key in SHOWN} | (
            {"finished_with": saved["finished_with"]} if "finished_with" in saved else {})
    shown["devices"] = devices(run)
    return shown


def saved_record(run: Path) -> dict | None:
    """``provenance.json`` of ``run``, checked; None when absent or damaged (with a warning)."""
    path = Path(run) / FILE
    if not path.exists():
        return None
    try:
        saved = read_json(path)
        check_fields(path, saved, FIELDS)
    except SeqappError as exc:
        log.warning(f"{exc}".split("; ")[0] + "; its provenance is not shown")
        return None
    return saved


def devices(run: Path) -> dict | None:
    """``distribute.json`` of ``run`` (strategy, workers, replicas, devices), or None."""
    path = Path(run) / DEVICES_FILE
    if not path.exists():
        return None
    try:
        found = read_json(path)
    except SeqappError as exc:
        log.warning(f"{exc}".split("; ")[0] + "; its devices are not shown")
        return None
    return found if isinstance(found, dict) else None


def data_changes(run: Path) -> tuple[list[str], str | None]:
    """The data files ``run`` recorded that are now missing or hold other bytes (one phrase each),
    and why they cannot be checked (None when they can: the run recorded its data)."""
    saved = saved_record(run)
    if saved is None:
        return [], f"{run} records no data files (it has no readable {FILE}: seqapp 0.4 and older wrote none)"
    if saved.get("data") is None:
        return [], f"{run} records no data files"
    changes = []
    for entry in saved["data"]:
        path = datafiles.bundled(entry["bundled"]) if entry.get("bundled") else Path(entry["path"])
        try:
            size, digest = file_digest(path)
        except OSError as exc:
            changes.append(f"{path} cannot be read now ({exc.strerror or exc})")
            continue
        if digest != entry["sha256"]:
            changes.append(f"{path} has changed (now {size:,} bytes, SHA-256 {digest[:12]}...; it was "
                           f"{entry['bytes']:,} bytes, {entry['sha256'][:12]}...)")
    return changes, None


def file_digest(path: Path) -> tuple[int, str]:
    """The size and SHA-256 of the regular file ``path``, read in chunks (OSError when it cannot be)."""
    if not os.path.isfile(path):  # before opening: a FIFO put in its place must not block
        raise OSError(errno.ENOENT if not os.path.lexists(path) else errno.EINVAL,
                      "no such file" if not os.path.lexists(path) else "not a regular file")
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def check_data(run: Path, allow_changed: bool) -> None:
    """``train --like RUN``: refuse (one line) when a data file ``run`` was trained on changed since,
    unless ``allow_changed`` (then one warning line says how); one warning when it cannot be checked."""
    changes, unchecked = data_changes(run)
    if unchecked:
        log.warning(f"{unchecked}; the data cannot be checked against it")
        return
    if not changes:
        return
    more = f" (and {len(changes) - 1} more file(s))" if len(changes) > 1 else ""
    if not allow_changed:
        raise SeqappError(f"the data {run} was trained on differs now: {changes[0]}{more}; train on it anyway with "
                          f"--allow-changed-data, or fine-tune the run on the new data: seqapp train --from {run} "
                          "--data FILE")
    log.warning(f"training like {run} on data that differs now: {changes[0]}{more}")
