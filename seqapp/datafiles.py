"""Reading the user's data files and the bundled defaults, with clear errors.

Every task reads its input through these helpers, so a missing, empty or binary file
gives the same kind of one-line message whatever the task, and every delimited file
(TSV or CSV) is split into rows the same way, each row with the line it came from.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

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
        raise SeqappError(f"data file {path} is not UTF-8 text (bad byte at line {line}); "
                          "re-save it as UTF-8") from None
    if not text.strip():
        raise SeqappError(f"data file {path} is empty; give a file with some text in it")
    return text


def read_rows(path: str | Path, format: str = "auto", sniff: bool = False) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of each non-blank row of a TSV or CSV file (numbers from 1).

    ``format`` is ``tsv`` (every tab separates, nothing is quoted), ``csv`` (quoted cells
    may hold the separator or span lines; a row is numbered by the line it starts on) or
    ``auto`` (a ``.csv`` file is CSV, any other TSV). With ``sniff`` the CSV separator
    (comma, semicolon or tab) is judged from the first line instead of being a comma.
    """
    path = Path(path)
    text = read_text(path)
    if format == "auto":
        format = "csv" if path.suffix.lower() == ".csv" else "tsv"
    if format == "tsv":
        lines = (line.rstrip("\r") for line in text.split("\n"))
        return [(number, line.split("\t")) for number, line in enumerate(lines, start=1) if line.strip()]
    return csv_rows(text, sniff_dialect(text) if sniff else csv.excel, path)


def csv_rows(text: str, dialect: Any, path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank CSV records of ``text`` with the line each starts on; ``path`` names errors."""
    reader = csv.reader(io.StringIO(text, newline=""), dialect=dialect)
    rows, previous_end = [], 0
    try:
        for fields in reader:
            if any(field.strip() for field in fields):
                rows.append((previous_end + 1, fields))
            previous_end = reader.line_num
    except csv.Error as exc:  # e.g. an unclosed quote that swallows the rest of the file
        raise SeqappError(f"{path.name}:{previous_end + 1}: malformed CSV ({exc}); "
                          "fix the quoting of the row that starts on that line") from None
    return rows


def sniff_dialect(text: str) -> Any:
    """Comma, semicolon or tab separated, judged from the first line (comma if unsure)."""
    try:
        return csv.Sniffer().sniff(text.splitlines()[0], delimiters=",;\t")
    except csv.Error:
        return csv.excel
