"""``seqapp generate --interactive`` and ``seqapp predict --interactive``: a line in, an answer out,
``:name value`` settings, one error line for anything wrong, exit 0 at the end of input, Ctrl-D
or Ctrl-C; prompts and line editing only on a terminal."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqapp.errors import SeqappError
from seqapp.interactive import GENERATE_SETTINGS, Session, parse_value, unescape


def one_shot(cli, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_each_seed_is_answered_as_generate_would(tiny_runs, cli):
    run = tiny_runs("textgen").path
    result = cli("generate", "--interactive", "--run", run, "--length", "30", "--random-seed", "4",
                 input="hello\n\nthe boat\n")
    assert result.exit_code == 0, result.output
    expected = [one_shot(cli, "generate", "--run", run, "--seed", seed, "--length", "30", "--random-seed", "4")
                for seed in ("hello", "the boat")]
    assert result.stdout == "".join(expected)  # the blank line is skipped; no prompt when stdin is not a terminal
    assert result.stderr == ""


def test_settings_change_between_seeds(tiny_runs, cli):
    run = tiny_runs("textgen").path
    lines = ["hello", ":temperature 0", ":length 12", ":top-k 5", ":top_p 0.9", "hello", ":json on", ":num-samples 2",
             "::odd seed", ":show", ":stop \\n", ":stop e", ":show", ":stop none", ":random-seed none", ":json off",
             ":num-samples 1", ":quit", "never answered"]
    result = cli("generate", "-i", "--run", run, "--length", "20", "--random-seed", "4", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    first = one_shot(cli, "generate", "--run", run, "--seed", "hello", "--length", "20", "--random-seed", "4")
    greedy = one_shot(cli, "generate", "--run", run, "--seed", "hello", "--length", "12", "-t", "0", "--top-k", "5",
                      "--top-p", "0.9", "--random-seed", "4")
    assert result.stdout.startswith(first + greedy)
    records = [json.loads(line) for line in out if line.startswith("{")]
    assert [record["seed"] for record in records] == [":odd seed", ":odd seed"]
    assert [len(record["generated"]) for record in records] == [12, 12]
    assert "temperature 0.0" in out and "top-k 5" in out and "top-p 0.9" in out and "num-samples 2" in out
    assert 'stop "\\n" "e"' in out and "json on" in out
    assert "never answered" not in result.stdout
    assert result.stderr == ""


def test_a_wrong_command_value_or_seed_is_one_line_and_the_session_goes_on(tiny_runs, cli):
    run = tiny_runs("textgen").path
    lines = [":temperature warm", ":temperature -1", ":top-p 2", ":length", ":bogus 3", ":json maybe", ":stop ",
             ":show", "hello"]
    result = cli("generate", "-i", "--run", run, "--length", "5", input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    errors = result.stderr.splitlines()
    assert errors == [
        "error: :temperature 'warm' must be a number, e.g. :temperature 0.8",
        "error: --temperature -1.0 must be a finite number >= 0; use 0 for greedy decoding or a value > 0 such as 0.8",
        "error: --top-p 2.0 must be in (0, 1]; 1 keeps every token",
        "error: :length needs a value, e.g. :length 3",
        "error: unknown command :bogus; :help lists the commands and settings",
        "error: :json 'maybe' must be on or off",
        "error: :stop needs a value, e.g. :stop text",
    ]
    assert "temperature 1.0" in result.stdout and "top-p none" in result.stdout  # the refused values were undone
    assert result.stdout.split("json off\n")[1].startswith("hello")  # and the seed after them is answered


def test_help_lists_every_setting(tiny_runs, cli):
    result = cli("generate", "-i", "--run", tiny_runs("textgen").path, input=":help\n")
    assert result.exit_code == 0
    for setting in GENERATE_SETTINGS:
        assert f"  {setting.flag} " in result.stdout
    assert ":show" in result.stdout and ":quit" in result.stdout


def test_predict_answers_each_line_as_predict_would(tiny_runs, cli):
    run = tiny_runs("sentiment").path
    texts = ["a lovely film", "the battery died after a day"]
    result = cli("predict", "--interactive", "--run", run, input="\n".join([texts[0], ":json on", texts[1]]) + "\n")
    assert result.exit_code == 0, result.output
    plain, record = result.stdout.splitlines()
    assert plain + "\n" == one_shot(cli, "predict", "--run", run, texts[0])
    assert json.loads(record) == json.loads(one_shot(cli, "predict", "--run", run, "--json", texts[1]))


def test_predict_settings_are_the_tasks_options(tiny_runs, cli):
    run = tiny_runs("translate").path
    lines = ["I am cold.", ":beam 0", ":beam 2", ":n-best 2", "I am cold.", ":n-best 3", ":horizon 3", ":json on",
             "I am cold."]
    result = cli("predict", "-i", "--run", run, input="\n".join(lines) + "\n")
    assert result.exit_code == 0, result.output
    greedy = one_shot(cli, "predict", "--run", run, "I am cold.")
    ranked = one_shot(cli, "predict", "--run", run, "--beam", "2", "--n-best", "2", "I am cold.")
    as_json = one_shot(cli, "predict", "--run", run, "--beam", "2", "--n-best", "2", "--json", "I am cold.")
    assert result.stdout == greedy + ranked + as_json
    assert [line for line in result.stderr.splitlines() if not line.startswith("warning:")] == [
        "error: --beam 0 must be at least 1 (1 is greedy decoding)",
        "error: --n-best 3 needs a beam at least as wide; give --beam 3 or more, or leave --beam out (it is then N)",
        "error: unknown command :horizon; :help lists the commands and settings",
    ]


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "-i", "some text"], "--interactive reads the inputs from stdin, one a line, and prints the "
                                     "answers; drop INPUTS"),
    (["predict", "-i", "--output", "out.txt"], "drop --output"),
    (["predict", "-i", "--beam", "0"], "--beam 0 must be at least 1"),
    (["predict", "-i", "--horizon", "3"], "--horizon does not apply to a translate run"),
    (["generate", "-i", "--seed", "hello"], "with --interactive each line read is a seed: drop --seed"),
    (["generate", "-i", "--temperature", "-2"], "--temperature -2.0 must be a finite number >= 0"),
])
def test_bad_starts_are_one_line_and_exit_2(tiny_runs, cli, args, message, tmp_path):
    task = "textgen" if args[0] == "generate" else "translate"
    result = cli(*args, "--run", tiny_runs(task).path, input="I am cold.\n")
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr
    assert result.stdout == ""


def test_a_run_that_takes_no_inputs_refuses_interactive(sine_run, cli):
    result = cli("predict", "-i", "--run", sine_run, input="1\n")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --interactive reads one input a line, and a sine run forecasts from the "
                                    "end of its own series and takes no inputs")


def test_ctrl_c_ends_the_session_quietly():
    answered = []

    def lines():
        yield "first"
        raise KeyboardInterrupt

    class Out:
        text = ""

        def write(self, text):
            self.text += text

        def flush(self):
            pass

    out = Out()
    session = Session({}, (), lambda values: None, lambda line, values: answered.append(line), what="a seed",
                      out=out, err=out)
    session.run(lines())
    assert answered == ["first"] and out.text == "\n"


def test_values_parse_as_their_settings_say():
    settings = {setting.name: setting for setting in GENERATE_SETTINGS}
    assert parse_value(settings["top_k"], " none") is None
    assert parse_value(settings["json"], "ON") is True and parse_value(settings["json"], "0") is False
    assert parse_value(settings["stop"], " . ") == ". "  # a text keeps its spaces
    assert unescape(r"a\nb\tc\\n\q") == "a\nb\tc\\n\\q"
    with pytest.raises(SeqappError, match=":length 'none' must be a whole number"):
        parse_value(settings["length"], "none")  # a setting that cannot be left out


# -- processes: a pipe, a terminal -------------------------------------------------------------------
def read_until(fd: int, marker: bytes, timeout: float = 120) -> bytes:
    """Bytes read from ``fd`` until ``marker`` appears (AssertionError after ``timeout`` seconds)."""
    found, deadline = b"", time.monotonic() + timeout
    while marker not in found:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {marker!r} in {timeout} s; got {found!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"end of output before {marker!r}; got {found!r}"
        found += chunk
    return found


@pytest.mark.process
def test_a_program_drives_a_session_through_a_pipe(tiny_runs):
    run = tiny_runs("textgen").path
    process = subprocess.Popen([sys.executable, "-m", "seqapp", "generate", "-i", "--run", str(run), "--json",
                                "--length", "40"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        for seed in ("hello", "the sea", "ANNA:"):  # each answer is read before the next seed is written
            process.stdin.write(seed + "\n")
            process.stdin.flush()
            record = json.loads(process.stdout.readline())
            assert record["seed"] == seed and len(record["generated"]) == 40
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=60) == 0
        assert process.stderr.read() == ""
    finally:
        process.kill()


@pytest.mark.process
def test_on_a_terminal_a_prompt_and_ctrl_d_ends_with_exit_0(tiny_runs, tmp_path):
    import pty

    run = tiny_runs("sentiment").path
    pid, fd = pty.fork()
    if pid == 0:  # the child: seqapp on the terminal
        os.environ["HOME"] = str(tmp_path)
        os.execv(sys.executable, [sys.executable, "-m", "seqapp", "predict", "-i", "--run", str(run)])
    try:
        banner = read_until(fd, b"> ")
        assert b"sentiment run" in banner and b":help" in banner
        os.write(fd, b"a lovely film\n")
        answer = read_until(fd, b"> ")
        assert b"a lovely film" in answer.split(b"\n", 1)[1]  # the echoed line, then the answer
        os.write(fd, b":sh\t\n")  # Tab completes :show
        assert b"json off" in read_until(fd, b"> ")
        os.write(fd, b"\x04")  # Ctrl-D
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
        assert not list(Path(tmp_path).iterdir())  # no history file
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
