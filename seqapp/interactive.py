"""Interactive sessions: ``seqapp generate --interactive`` and ``seqapp predict --interactive``.

The run is loaded once (:class:`seqapp.api.LoadedRun`, on the engine the commands choose) and
every line read is answered with it: a seed to continue, streamed as it is generated, or a text
to predict on. A line ``:NAME VALUE`` changes one of the settings the command takes as options
(``:temperature 0.5``, ``:beam 5``; ``:help`` lists them, ``:show`` prints them); a wrong command,
value or input is one ``error: ...`` line and the session goes on. End of input (Ctrl-D) and
Ctrl-C end the session with exit code 0.

On a terminal, lines are read with Python's ``readline`` (line editing and the history of the
session, kept in memory only) after a prompt; from a pipe or a file the same lines are read
without prompts, so a program can drive a session and read each answer as it comes.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from seqapp import api
from seqapp.errors import SeqappError

NONE_WORDS = ("none", "null")
TRUE_WORDS, FALSE_WORDS = ("on", "true", "yes", "1"), ("off", "false", "no", "0")
ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


@dataclass(frozen=True)
class Setting:
    """A setting of a session: an option of the command, changed with ``:name value``."""

    name: str  # the option's Python name (``top_k``); typed as ``:top-k`` or ``:top_k``
    kind: type  # int, float, bool, str or Path; list: texts added one at a time (``--stop``)
    help: str
    optional: bool = True  # ``:name none`` unsets it

    @property
    def flag(self) -> str:
        return self.name.replace("_", "-")


GENERATE_SETTINGS = (
    Setting("length", int, "tokens to generate", optional=False),
    Setting("temperature", float, "sampling temperature; 0 is greedy", optional=False),
    Setting("top_k", int, "sample only among the k most likely tokens"),
    Setting("top_p", float, "sample from the smallest set with this much probability, in (0, 1]"),
    Setting("num_samples", int, "independent samples of each seed", optional=False),
    Setting("random_seed", int, "random seed: each seed then gives the same text every time"),
    Setting("stop", list, r"end a sample after this text (adds one; \n is a line break; none: no stop)"),
    Setting("no_repeat_ngram", int, "never generate an n-gram of N tokens twice"),
    Setting("json", bool, "print each sample as a JSON record (on/off)", optional=False),
)


def parse_value(setting: Setting, text: str) -> Any:
    """The value of ``:name text`` for ``setting``; a SeqappError saying what is expected."""
    word = text.strip()
    if setting.optional and word.lower() in NONE_WORDS:
        return None
    if not word:
        raise SeqappError(f":{setting.flag} needs a value, e.g. :{setting.flag} {example(setting)}")
    if setting.kind is bool:
        if word.lower() in TRUE_WORDS + FALSE_WORDS:
            return word.lower() in TRUE_WORDS
        raise SeqappError(f":{setting.flag} {word!r} must be on or off")
    if setting.kind in (int, float):
        try:
            return setting.kind(word)
        except ValueError:
            kind = "a whole number" if setting.kind is int else "a number"
            raise SeqappError(f":{setting.flag} {word!r} must be {kind}, e.g. :{setting.flag} "
                              f"{example(setting)}") from None
    if setting.kind is Path:
        return Path(word)
    return unescape(text[1:] if text.startswith(" ") else text)  # a text keeps its spaces


def example(setting: Setting) -> str:
    return {bool: "on", int: "3", float: "0.8", Path: "out.png"}.get(setting.kind, "text")


def unescape(text: str) -> str:
    r"""``\n``, ``\t`` and ``\\`` in ``text`` as the characters they stand for."""
    return re.sub(r"\\(.)", lambda found: ESCAPES.get(found.group(1), found.group(0)), text)


def shown(value: Any) -> str:
    """A setting's value as ``:show`` prints it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return " ".join(json.dumps(item, ensure_ascii=False) for item in value) or "none"
    return str(value)


class Session:
    """Settings changed by ``:name value`` lines, and an answer to every other line.

    ``check(settings)`` refuses settings that cannot work together (a SeqappError: the change
    is undone); ``answer(line, settings)`` answers one input line on ``out``.
    """

    def __init__(self, settings: dict[str, Any], specs: tuple[Setting, ...], check: Callable[[dict], None],
                 answer: Callable[[str, dict], None], *, what: str, out: TextIO, err: TextIO) -> None:
        self.settings, self.specs, self.check, self.answer = settings, specs, check, answer
        self.what, self.out, self.err = what, out, err
        self.by_name = {name: spec for spec in specs for name in (spec.name, spec.flag)}

    def handle(self, line: str, chatty: bool = False) -> bool:
        """Answer ``line`` (or carry out its command); False when the session should end."""
        if line.startswith(":") and not line.startswith("::"):
            return self.command(line[1:], chatty)
        text = line[1:] if line.startswith("::") else line
        if not text.strip():
            return True
        try:
            self.answer(text, self.settings)
        except SeqappError as exc:
            self.error(str(exc))
        self.out.flush()
        return True

    def command(self, text: str, chatty: bool) -> bool:
        name, _, value = text.partition(" ")
        if name in ("quit", "q", "exit"):
            return False
        if name in ("help", "h", "?"):
            self.write_lines(self.help_lines())
        elif name == "show":
            self.write_lines([f"{spec.flag} {shown(self.settings[spec.name])}" for spec in self.specs])
        elif name.replace("_", "-") in self.by_name:
            self.change(self.by_name[name.replace("_", "-")], value, chatty)
        else:
            self.error(f"unknown command :{name}; :help lists the commands and settings")
        return True

    def change(self, spec: Setting, value: str, chatty: bool) -> None:
        """``:name value``: the setting changed if the value parses and passes the checks, else one error line."""
        before = dict(self.settings)
        try:
            parsed = parse_value(spec, value)
            if spec.kind is list:  # each :stop adds one; none clears them
                parsed = None if parsed is None else [*(self.settings[spec.name] or []), parsed]
            self.settings[spec.name] = parsed
            self.check(self.settings)
        except SeqappError as exc:
            self.settings.clear()
            self.settings.update(before)
            self.error(str(exc))
            return
        if chatty:
            self.err.write(f"{spec.flag} {shown(self.settings[spec.name])}\n")

    def help_lines(self) -> list[str]:
        width = max(len(spec.flag) for spec in self.specs) + 2
        lines = [f"each line is {self.what}; a line starting with ':' is a command (start it with '::' for "
                 f"{self.what} that starts with ':')",
                 ":NAME VALUE  change a setting (:NAME none unsets one that may be left out):"]
        lines += [f"  {spec.flag.ljust(width)}{spec.help}" for spec in self.specs]
        lines += [":show        the settings now", ":help        this list", ":quit        end (or Ctrl-D, Ctrl-C)"]
        return lines

    def write_lines(self, lines: list[str]) -> None:
        self.out.write("".join(f"{line}\n" for line in lines))
        self.out.flush()

    def error(self, message: str) -> None:
        self.out.flush()
        self.err.write(f"error: {message}\n")
        self.err.flush()

    def run(self, lines: Iterator[str], chatty: bool = False) -> None:
        """Handle ``lines`` until they end, ``:quit`` or Ctrl-C."""
        try:
            for line in lines:
                if not self.handle(line, chatty):
                    break
        except KeyboardInterrupt:
            self.out.write("\n")
        self.out.flush()


def read_lines(prompt: str, commands: list[str]) -> Iterator[str]:
    """The lines of stdin: after ``prompt`` with line editing and history on a terminal (Tab
    completes ``commands``), else as they come, without prompts."""
    if not sys.stdin.isatty():
        for line in iter(sys.stdin.readline, ""):
            yield line.rstrip("\r\n")
        return
    line_editing(commands)
    while True:
        try:
            if sys.stdout.isatty():
                line = input(prompt)
            else:  # the answers go to a file or a pipe: the prompt must not
                sys.stderr.write(prompt)
                sys.stderr.flush()
                line = input()
        except EOFError:
            sys.stderr.write("\n")
            return
        yield line


def line_editing(commands: list[str]) -> None:
    """Python's readline for ``input()``: editing keys and this session's history (no history file
    is read or written); Tab completes the ``:`` commands. Nothing where readline is missing."""
    try:
        import readline
    except ImportError:
        return

    def complete(text: str, state: int) -> str | None:
        found = [command for command in commands if command.startswith(text)]
        return found[state] if state < len(found) else None

    readline.set_completer(complete)
    readline.set_completer_delims(" \t\n")
    binding = "bind ^I rl_complete" if "libedit" in (readline.__doc__ or "") else "tab: complete"
    readline.parse_and_bind(binding)


def start(session: Session, loaded: api.LoadedRun, prompt: str) -> None:
    """Run ``session`` on stdin: on a terminal with a line saying what it is and a prompt."""
    chatty = sys.stdin.isatty()
    if chatty:
        sys.stderr.write(f"{loaded.task} run {loaded.path} on {loaded.engine}: type {session.what} and press Enter; "
                         ":help lists the settings, Ctrl-D ends\n")
    commands = [f":{name}" for name in ("help", "show", "quit", *(spec.flag for spec in session.specs))]
    session.run(read_lines(prompt, commands), chatty)


# -- generate ------------------------------------------------------------------------------------
def write_generation(stream: Iterator[list[str]], as_json: bool = False, out: TextIO | None = None) -> None:
    """Print a ``Task.generate`` stream as ``seqapp generate`` does: one sample as it comes (flushed
    piece by piece), several one after the other when done, or with ``as_json`` one record a sample."""
    out = out or sys.stdout
    if as_json:
        for record in api.generated_records(stream):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()
        return
    texts: list[str] = []
    for pieces in stream:
        if len(pieces) == 1:
            out.write(pieces[0])
            out.flush()
        texts = [text + piece for text, piece in zip(texts, pieces)] if texts else list(pieces)
    if len(texts) <= 1:
        out.write("\n")
    else:
        for i, text in enumerate(texts, start=1):
            out.write(f"--- sample {i} ---\n{text}\n")
    out.flush()


def generate_session(loaded: api.LoadedRun, settings: dict, as_json: bool = False) -> None:
    """``seqapp generate --interactive``: every line a seed, continued with the settings of the moment."""
    settings = {**settings, "stop": list(settings.get("stop") or []) or None, "json": as_json}

    def check(values: dict) -> None:
        api.check_generate(values["length"], values["temperature"], values["top_k"], values["top_p"],
                           values["num_samples"], values["stop"], values["no_repeat_ngram"])

    def answer(seed: str, values: dict) -> None:
        options = {key: value for key, value in values.items() if key != "json"}
        write_generation(loaded.stream(seed, **options), values["json"])

    session = Session(settings, GENERATE_SETTINGS, check, answer, what="a seed", out=sys.stdout, err=sys.stderr)
    start(session, loaded, "seed> ")


# -- predict -------------------------------------------------------------------------------------
def predict_settings(loaded: api.LoadedRun) -> tuple[Setting, ...]:
    """The settings of a ``predict`` session: the options the run's task declares."""
    return tuple(Setting(option.name, option.type, option.help.rstrip("."), optional=option.type is not bool)
                 for option in loaded.implementation.predict_options)


def check_takes_inputs(task: Any) -> None:
    """Refuse ``--interactive`` for a task that takes no inputs (it refuses a text with no options)."""
    try:
        task.check_inputs(["text"])
    except SeqappError as exc:
        raise SeqappError(f"--interactive reads one input a line, and {exc}") from None


def predict_session(run: Any, engine: str, options: dict, inputs: list[str] | None = None, file: Path | None = None,
                    output: Path | None = None) -> None:
    """``seqapp predict --interactive``: every line one input, answered with the options of the moment."""
    from seqapp.tasks import get_task

    for flag, given in (("INPUTS", inputs), ("--file", file), ("--output", output)):
        if given:
            raise SeqappError(f"--interactive reads the inputs from stdin, one a line, and prints the answers; "
                              f"drop {flag}")
    task = get_task(run.task)()
    check_takes_inputs(task)
    declared = {option.name for option in task.predict_options}
    api.check_predict(task, run, ["text"], options)  # before the engine starts: a wrong option answers at once
    loaded = api.LoadedRun(run, engine)
    settings = {name: options.get(name) for name in declared}

    def check(values: dict) -> None:
        api.check_predict(task, run, ["text"], values)

    def answer(text: str, values: dict) -> None:
        given = api.check_predict(task, run, [text], values)
        for line in loaded.lines([text], given):
            sys.stdout.write(line + "\n")

    session = Session(settings, predict_settings(loaded), check, answer, what="an input", out=sys.stdout,
                      err=sys.stderr)
    start(session, loaded, "> ")
