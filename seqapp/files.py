"""Small file helpers every layer may use: JSON read and written atomically, run and draft names.

A run folder's files are written through a temporary name and an atomic rename, so a killed
process never leaves half a file where a good one stood; a file that cannot be read is one
clear error naming it. Nothing here knows what a run or a task is.
"""

from __future__ import annotations

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
