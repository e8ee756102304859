"""Progress of long loops: reported to whoever listens, drawn as a bar on a terminal only."""

from __future__ import annotations

import io
import threading

from rich.console import Console

from seqapp import progress
from seqapp.progress_bar import Bar, progress_bar


def test_reports_reach_the_listener_of_the_block_only():
    heard = []
    progress.report("before", 1, 2)  # nobody listens: nothing happens
    with progress.listening(lambda *args: heard.append(args)):
        progress.report("decoding", 1, 4)
        with progress.listening(None):
            progress.report("hidden", 1, 1)
        progress.report("decoding", 4, 4)
    progress.report("after", 1, 1)
    assert heard == [("decoding", 1, 4), ("decoding", 4, 4)]


def test_decoding_reports_the_sentences_done_after_each_batch(tiny_runs):
    from seqapp.tasks.translate import Translate
    from seqapp.tasks.translate_decoding import Decoding

    run = tiny_runs("translate")
    translator = Translate().translator(run, "litert")
    heard = []
    sources = ["I am cold.", "Where is it?", "She reads.", "We run.", "Go."]
    with progress.listening(lambda *args: heard.append(args)):
        translator.decode_ranked(sources, Decoding(beam=2), batch_size=2)
        translator.decode_ranked(sources[:1], Decoding(beam=1))
    assert heard == [("beam 2 decoding", done, 5) for done in (0, 2, 4, 5)] + [
        ("greedy decoding", 0, 1), ("greedy decoding", 1, 1)]


def terminal() -> tuple[Console, io.StringIO]:
    text = io.StringIO()
    return Console(file=text, force_terminal=True, width=100), text


def test_a_bar_is_drawn_on_a_terminal_once_the_delay_is_past():
    console, text = terminal()
    with progress_bar("evaluating run", console=console, delay_s=0):
        progress.report("beam 5 decoding", 3, 10)
    drawn = text.getvalue()
    assert "beam 5 decoding" in drawn and "3/10" in drawn


def test_a_spinner_row_shows_even_when_nothing_reports():
    console, text = terminal()
    bar = Bar("exporting run", console, spinner=True, delay_s=0)
    shown = threading.Event()
    while not shown.wait(0.01):
        with bar.lock:
            if bar.progress is not None:
                shown.set()
    bar.close()
    assert "exporting run" in text.getvalue()


def test_nothing_is_drawn_before_the_delay_or_off_a_terminal(capsys):
    console, text = terminal()
    with progress_bar("evaluating", spinner=True, console=console, delay_s=60):
        progress.report("greedy decoding", 1, 2)
    assert text.getvalue() == ""
    with progress_bar("evaluating", spinner=True):  # stderr is not a terminal under pytest
        heard = []
        progress.report("greedy decoding", 1, 2)
        assert progress._listener.get() is None and heard == []
    assert capsys.readouterr().err == ""
