"""Small file helpers every layer may use: JSON read, checked and written atomically, run and draft names.

A run folder's files are written through a temporary name and an atomic rename, so a killed
process never leaves half a file where a good one stood; a file that cannot be read is one
clear error naming it. Nothing here knows what a run or a task is.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

from seqapp.errors import SeqappError


def read_json(path: Path) -> Any:
    """A run file's JSON (NaN and infinities read as null); a damaged file is one clear error naming it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda _: None)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SeqappError(f"{path} cannot be read ({exc}); the run is damaged, train it again") from None


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so it is valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def write_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(finite(value), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def hold_lock(path: Path, busy: str) -> Any:
    """An open handle on ``path`` (made if absent) holding an exclusive lock on it, which lasts
    until the handle is closed or the process ends; SeqappError(``busy``) when another
    process holds it."""
    handle = open(path, "a+")  # noqa: SIM115 (held open: it is the lock)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise SeqappError(busy) from None
    return handle


def check_name(name: str | None) -> None:
    """Refuse a ``--name`` that is not a plain folder-name suffix (before any training starts)."""
    if name is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise SeqappError(f"--name {name!r} cannot be part of a folder name; use up to 64 letters, digits, "
                          "'.', '_' or '-', starting with a letter or digit")


def unique_name(task_dir: Path, name: str | None) -> Path:
    """``<task_dir>/<timestamp>[-name]``, with ``-2``, ``-3``... if that exists already."""
    stem = time.strftime("%Y%m%d-%H%M%S") + (f"-{name}" if name else "")
    candidate, counter = task_dir / stem, 2
    while candidate.exists():
        candidate, counter = task_dir / f"{stem}-{counter}", counter + 1
    return candidate


# -- what a run's JSON files must hold ----------------------------------------------------


class Kind:
    """One expected JSON value in a :func:`check_fields` spec: how it is called, and its test."""

    def __init__(self, name: str, test: Any) -> None:
        self.name = name
        self.test = test

    def __repr__(self) -> str:
        return self.name


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


TEXT = Kind("a text", lambda value: isinstance(value, str))
FLAG = Kind("true or false", lambda value: isinstance(value, bool))
INTEGER = Kind("an integer", lambda value: isinstance(value, int) and not isinstance(value, bool))
COUNT = Kind("an integer >= 1", lambda value: INTEGER.test(value) and value >= 1)
NUMBER = Kind("a finite number", is_number)


def one_of(*values: str) -> Kind:
    """One of the texts ``values``."""
    return Kind(" or ".join(repr(value) for value in values), lambda value: isinstance(value, str) and value in values)


def nullable(kind: Kind) -> Kind:
    """``kind``, or null (NaN and infinities are saved as null)."""
    return Kind(f"{kind.name} or null", lambda value: value is None or kind.test(value))


def list_of(kind: Kind, least: int = 0) -> Kind:
    """A list of at least ``least`` items, each of ``kind``."""
    name = f"a list of {least}+ items, each {kind.name}" if least else f"a list, each item {kind.name}"
    return Kind(name, lambda value: isinstance(value, list) and len(value) >= least
                and all(kind.test(item) for item in value))


def check_fields(path: Path, value: Any, spec: dict, fix: str = "the run is damaged, train it again") -> None:
    """Refuse a JSON file whose content lacks a field of ``spec`` or holds one of another kind.

    ``spec`` maps field names to a :class:`Kind` or to a nested spec (an object with those
    fields). A name ending in ``?`` may be absent; a key ``"if NAME"`` holds a spec that
    applies (to the same object) only when field ``NAME`` is present. The error is one line
    naming the file and the field.
    """
    problem = field_problem(value, spec, "")
    if problem:
        raise SeqappError(f"{path} {problem}; {fix}")


def field_problem(value: Any, spec: dict, prefix: str) -> str | None:
    """What is wrong with ``value`` against ``spec`` (fields named from ``prefix``), or None."""
    if not isinstance(value, dict):
        if not prefix:
            return f"is {json_kind(value)}, not a JSON object"
        return f"field '{prefix[:-1]}' is {json_kind(value)}, not an object"
    for key, expected in spec.items():
        name = key.rstrip("?")
        if key.startswith("if "):
            problem = field_problem(value, expected, prefix) if key[3:] in value else None
        elif name not in value:
            problem = None if key.endswith("?") else f"has no field '{prefix}{name}'"
        elif isinstance(expected, dict):
            problem = field_problem(value[name], expected, f"{prefix}{name}.")
        elif not expected.test(value[name]):
            problem = f"field '{prefix}{name}' is {json_kind(value[name])}, not {expected.name}"
        else:
            problem = None
        if problem:
            return problem
    return None


def json_kind(value: Any) -> str:
    """How a JSON value is named in messages: 'a text', 'the number 0', 'a list of 3 items', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the text {value!r}" if len(value) <= 40 else f"a text of {len(value)} characters"
    if isinstance(value, list):
        return f"a list of {len(value)} item{'' if len(value) == 1 else 's'}"
    return "an object"
