"""Reading the user's data files and the bundled defaults, with clear errors.

Every task reads its input through these helpers, so a missing, empty or binary file
gives the same kind of one-line message whatever the task, and every delimited file
(TSV or CSV) is split into rows the same way, each row with the line it came from.
:func:`read_bytes` is the one place a user-given file is opened: it checks the path is a
regular file before opening it (a FIFO never blocks, a device is never read), and reads at
most a size limit, so no input can hang seqapp or fill its memory.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqapp.errors import SeqappError

MAX_DATA_BYTES = 2 * 1024**3  # largest data file read (the whole file is held in memory)
READ_CHUNK = 1 << 20
NOT_REGULAR = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))
# Each is called with (path, bytes) of every file read_bytes returns: how seqapp.provenance
# records the data files a training reads, whatever the task.
readers: list[Callable[[Path, bytes], None]] = []


def bundled(name: str) -> Path:
    """Path of a default data file shipped with seqapp (top-level ``data/``)."""
    from importlib.resources import files

    return Path(str(files("seqapp.bundled") / name))


def read_text(path: str | Path, option: str = "--data") -> str:
    """Read a UTF-8 text file; refuse missing, empty, binary, special and oversized files.

    ``option`` is the command-line option that named the file, for the error messages.
    """
    path = Path(path)
    raw = read_bytes(path, fix=f"check the path given to {option}")
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


def read_bytes(path: str | Path, what: str = "data file", fix: str = "check the path given to --data",
               limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them (``MAX_DATA_BYTES``).

    ``what`` names the file in errors and ``fix`` ends them. The path is checked before it is
    opened, and opened non-blocking, so a FIFO, device or socket is refused, never waited on.
    """
    limit = MAX_DATA_BYTES if limit is None else limit
    info = stat_regular(path, what, fix)
    check_size(path, what, info.st_size, limit)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise path_error(exc, path, what, fix) from None
    with os.fdopen(fd, "rb", buffering=0) as handle:
        kind = file_kind(os.fstat(fd).st_mode)  # the path may have been swapped since it was checked
        if kind:
            raise SeqappError(f"{what} {path} is {kind}, not a regular file; {fix}")
        chunks, total = [], 0
        try:
            while total <= limit:
                chunk = handle.read(min(max(info.st_size + 1, READ_CHUNK), limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
        except OSError as exc:
            raise path_error(exc, path, what, fix) from None
    check_size(path, what, total, limit, read=True)
    data = b"".join(chunks)
    for reader in readers:
        reader(Path(path), data)
    return data


def stat_regular(path: str | Path, what: str, fix: str) -> os.stat_result:
    """``os.stat`` of ``path`` (links followed), or a SeqappError if it is not a regular file."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:
        raise path_error(exc, path, what, fix) from None
    kind = file_kind(info.st_mode)
    if kind:
        raise SeqappError(f"{what} {path} is {kind}, not a regular file; {fix}")
    return info


def file_kind(mode: int) -> str:
    """What a non-regular file is ('a named pipe (FIFO)', ...); '' for a regular file."""
    return next((name for test, name in NOT_REGULAR if test(mode)), "")


def path_error(exc: OSError | ValueError, path: str | Path, what: str, fix: str) -> SeqappError:
    """A one-line SeqappError for a failure to stat, open or read ``path``."""
    if isinstance(exc, ValueError):  # e.g. an embedded NUL character
        return SeqappError(f"{what} path {str(path)!r} is not a valid path ({exc}); {fix}")
    code = exc.errno
    if code == errno.ENOENT and os.path.islink(path):
        return SeqappError(f"{what} {path} is a symbolic link to {os.readlink(path)}, which does not exist; {fix}")
    if code in (errno.ENOENT, errno.ENOTDIR):
        return SeqappError(f"{what} {path} does not exist; {fix}")
    if code == errno.ELOOP:
        return SeqappError(f"{what} {path} is a symbolic link loop (its links never reach a file); {fix}")
    if code in (errno.EACCES, errno.EPERM):
        return SeqappError(f"{what} {path} cannot be read: permission denied; "
                           "check its permissions or copy it somewhere readable")
    return SeqappError(f"cannot read {what} {path}: {exc.strerror or exc}; {fix}")


def check_size(path: str | Path, what: str, size: int, limit: int, read: bool = False) -> None:
    """Refuse a file of ``size`` bytes over ``limit`` (``read``: counted while reading it)."""
    if size <= limit:
        return
    most, found = human_size(limit), human_size(size)
    if read:
        found = f"holds more than the limit of {most}"
    else:
        if most == found:  # e.g. one byte over: show the exact sizes
            most, found = f"{limit:,} bytes", f"{size:,} bytes"
        found = f"is {found}, over the limit of {most}"
    raise SeqappError(f"{what} {path} {found}; use a smaller file")


def human_size(size: int) -> str:
    """``size`` bytes in words: '512 bytes', '3.2 MiB', '2.0 GiB'."""
    if size < 1024:
        return f"{size} bytes"
    value, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{value:.1f} {unit}"


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
