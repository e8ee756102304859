"""Reading the user's data files and the bundled defaults, with clear errors.

Every task reads its input through these helpers, so a missing, empty or binary file
gives the same kind of one-line message whatever the task.
"""

from __future__ import annotations

from pathlib import Path

from seqapp.errors import SeqappError


def bundled(name: str) -> Path:
    """Path of a default data file shipped with seqapp (top-level ``data/``)."""
    from importlib.resources import files

    return Path(str(files("seqapp.bundled") / name))


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file; refuse missing, empty and binary files."""
    path = Path(path)
    if not path.exists():
        raise SeqappError(f"data file {path} does not exist; check the path given to --data")
    if path.is_dir():
        raise SeqappError(f"data path {path} is a folder; give a text file to --data")
    raw = path.read_bytes()
    if b"\x00" in raw[:65536]:
        raise SeqappError(f"data file {path} looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SeqappError(f"data file {path} is not UTF-8 text (bad byte at line {line}); re-save it as UTF-8") from None
    if not text.strip():
        raise SeqappError(f"data file {path} is empty; give a file with some text in it")
    return text
