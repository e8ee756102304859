"""The one delimited-file reader: rows with the line they start on, TSV or CSV, sniffed separators."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from seqapp import datafiles
from seqapp.datafiles import read_rows, read_text
from seqapp.errors import SeqappError


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_tsv_rows_split_on_every_tab_and_skip_blank_lines(tmp_path):
    path = write(tmp_path, "pairs.tsv", 'Go.\tVa !\r\n\n"quoted\ttext"\tx\n')
    assert read_rows(path) == [(1, ["Go.", "Va !"]), (3, ['"quoted', 'text"', "x"])]


def test_csv_rows_are_numbered_by_the_line_they_start_on(tmp_path):
    path = write(tmp_path, "reviews.csv", 'text,label\n\n"two\nlines, one cell",1\nlast,0\n')
    assert read_rows(path) == [(1, ["text", "label"]), (3, ["two\nlines, one cell", "1"]), (5, ["last", "0"])]
    assert read_rows(path, "tsv")[1] == (3, ['"two'])


def test_sniffing_finds_semicolons_and_plain_csv_keeps_commas(tmp_path):
    path = write(tmp_path, "series.txt", "day;temp\n1;3.5\n")
    assert read_rows(path, "csv", sniff=True) == [(1, ["day", "temp"]), (2, ["1", "3.5"])]
    assert read_rows(path, "csv") == [(1, ["day;temp"]), (2, ["1;3.5"])]


def test_an_unclosed_quote_is_reported_at_the_line_it_opens(tmp_path):
    path = write(tmp_path, "bad.csv", 'a,b\n1,2\n"unclosed,3\n' + "more text\n" * 20_000)
    with pytest.raises(SeqappError, match=r"bad\.csv:3: malformed CSV"):
        read_rows(path)


# -- unsafe paths: each is refused with one clear line, at once, before anything is read ----
def refused(read, path, limit_s: float = 30.0) -> str:
    """The SeqappError message of ``read(path)``, run in a thread so a hang fails the test."""
    outcome: dict = {}

    def target() -> None:
        try:
            read(path)
        except SeqappError as exc:
            outcome["message"] = str(exc)
        except BaseException as exc:  # reported by the assertion below
            outcome["other"] = exc

    start = time.monotonic()
    worker = threading.Thread(target=target, daemon=True)
    worker.start()
    worker.join(limit_s)
    assert not worker.is_alive(), f"reading {path} hung"
    assert time.monotonic() - start < limit_s
    assert "message" in outcome, f"no SeqappError: {outcome}"
    return outcome["message"]


def fifo(tmp_path):
    os.mkfifo(tmp_path / "pipe.txt")
    return tmp_path / "pipe.txt"


def symlink_loop(tmp_path):
    (tmp_path / "a.txt").symlink_to(tmp_path / "b.txt")
    (tmp_path / "b.txt").symlink_to(tmp_path / "a.txt")
    return tmp_path / "a.txt"


def broken_link(tmp_path):
    (tmp_path / "link.txt").symlink_to(tmp_path / "gone.txt")
    return tmp_path / "link.txt"


def unix_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX)
    path = tmp_path / "s.sock"
    try:
        sock.bind(str(path))
    except OSError as exc:  # e.g. a tmp path longer than a socket name may be
        pytest.skip(f"cannot make a socket here: {exc}")
    finally:
        sock.close()
    return path


@pytest.mark.parametrize("make, words", [
    (lambda tmp: Path("/dev/zero"), ["data file /dev/zero is a character device, not a regular file", "--data"]),
    (fifo, ["pipe.txt is a named pipe (FIFO), not a regular file"]),
    (symlink_loop, ["a.txt is a symbolic link loop"]),
    (broken_link, ["link.txt is a symbolic link to", "gone.txt, which does not exist"]),
    (unix_socket, ["s.sock is a socket, not a regular file"]),
    (lambda tmp: tmp, ["is a folder, not a regular file"]),
    (lambda tmp: tmp / "missing.txt", ["missing.txt does not exist; check the path given to --data"]),
    (lambda tmp: tmp / "file.txt" / "below.txt", ["below.txt does not exist"]),
    (lambda tmp: str(tmp / "nul\x00.txt"), ["is not a valid path", "null byte"]),
    (lambda tmp: write(tmp, "bin.txt", "PK\x00\x03 zip"), ["bin.txt looks binary (it contains NUL bytes)"]),
    (lambda tmp: write(tmp, "empty.txt", " \n\t\n"), ["empty.txt is empty"]),
])
def test_unsafe_or_unusable_paths_get_one_clear_line(tmp_path, make, words):
    (tmp_path / "file.txt").write_text("text\n")
    message = refused(read_text, make(tmp_path))
    for word in words:
        assert word in message


def test_dev_zero_and_a_fifo_are_refused_at_once_also_as_rows(tmp_path):
    assert "character device" in refused(read_rows, Path("/dev/zero"))
    assert "named pipe (FIFO)" in refused(read_rows, fifo(tmp_path))


def test_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond line caf\u00e9\n".encode("latin-1"))
    assert "is not UTF-8 text (bad byte at line 2)" in refused(read_text, path)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_says_permission_denied(tmp_path):
    path = write(tmp_path, "secret.txt", "text\n")
    path.chmod(0)
    assert "secret.txt cannot be read: permission denied" in refused(read_text, path)


@pytest.mark.parametrize("size, limit, words", [
    (20, 10, ["is 20 bytes, over the limit of 10 bytes", "use a smaller file"]),
    (11, 10, ["is 11 bytes, over the limit of 10 bytes"]),
    (3 * 1024**2, 2 * 1024**2, ["is 3.0 MiB, over the limit of 2.0 MiB"]),
])
def test_files_over_the_size_limit_are_refused_before_reading(tmp_path, monkeypatch, size, limit, words):
    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", limit)
    path = tmp_path / "big.txt"
    with open(path, "wb") as handle:
        handle.truncate(size)  # sparse: the size alone must refuse it
    message = refused(read_text, path)
    for word in words:
        assert word in message
    assert read_text(write(tmp_path, "ok.txt", "x" * (limit - 1) + "\n")) == "x" * (limit - 1) + "\n"


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_reading_stops_at_the_limit_when_the_size_on_disk_lies(monkeypatch):
    # /proc files are regular files of size 0 that hold text: only the bounded read can catch them
    monkeypatch.setattr(datafiles, "MAX_DATA_BYTES", 16)
    message = refused(read_text, Path("/proc/self/status"))
    assert "/proc/self/status holds more than the limit of 16 bytes" in message
    assert len(datafiles.read_bytes("/proc/self/status", limit=10**6)) > 16


# -- a sentiment CSV with only its header ---------------------------------------------------
@pytest.mark.parametrize("text, options, words", [
    ("text,label\n", [], ["only one row, h.csv:1 ('text' / 'label')", "a header with no data rows"]),
    ("text,label\n", ["--set", "data.header=true"], ["h.csv has a header but no rows; add labelled texts"]),
    ("review,stars\n\n", ["--set", "data.text_column=review", "--set", "data.label_column=stars"],
     ["h.csv has a header but no rows; add labelled texts"]),
])
def test_header_only_csv_says_there_are_no_rows(cli, tmp_path, text, options, words):
    path = write(tmp_path, "h.csv", text)
    result = cli("train", "sentiment", "--data", path, "--out", tmp_path / "runs", *options)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "single label" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
