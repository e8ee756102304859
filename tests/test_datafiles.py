"""The one delimited-file reader: rows with the line they start on, TSV or CSV, sniffed separators."""

from __future__ import annotations

import pytest

from seqapp.datafiles import read_rows
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
