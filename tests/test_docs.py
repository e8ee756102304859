"""The docs: links that resolve, a README a newcomer finishes, and examples that run.

- Every relative link in README.md, docs/*.md and bench/README.md points at a file that
  exists, and a ``#anchor`` at a heading of that file (GitHub's anchor rules).
- README.md has at most 320 lines: the reference lives in docs/.
- ``process``: every command block (a ```bash fence) of README.md and of each docs/*.md page
  runs, block after block, in a temporary folder of its own with ``SEQAPP_RUNS`` inside it,
  so ``generate``, ``evaluate`` and ``predict`` find the runs that the page trained. Each
  ``seqapp train TEMPLATE`` (and ``seqapp tune TEMPLATE``) gets its task's ``tiny`` settings, no XLA and
  ``--epochs 1`` (a search, ``--trials 2``); data files the examples name are made there from the
  bundled data; a dated run folder in an example
  (``runs/textgen/20261125-130802``) stands for the newest run of that task; ``seqapp
  serve`` runs in the background on a free port, which the page's ``curl`` lines then use.
  A command made only of ``seqapp`` calls runs in the test process (TensorFlow loads once, not
  once a command; ``serve`` and ``launch`` excepted); pipes, redirections and variables run in
  ``bash``. Each command must exit 0, or with the code listed in EXPECTED_CODE. Commands that cannot
  run here are listed in EXEMPT, each with its reason; fences other than ``bash`` (the
  Kubernetes YAML, Python, folder trees) are not commands. bench/README.md is checked for
  links only: its commands take minutes to hours and write bench/results/.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import Server

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
LINKED = [README, *PAGES, ROOT / "bench" / "README.md"]
README_MAX_LINES = 320

# Commands (or parts of an `a && b` chain) that are not run, matched with re.search: why not.
EXEMPT = {
    r"^pip install": "installs packages (the CUDA extra `.[cuda]` among them); the tests run in the installed "
                     "environment",
    r"^python -m pytest": "the test suite itself, which runs these tests",
    r"^tensorboard ": "TensorBoard's server runs until stopped (the tensorboard extra); tests/test_tensorboard.py "
                      "reads the logs with its reader",
    r"^\.ci/run": "CI: the linter, every test suite and the short benchmark",
    r"^TF_CONFIG=": "the two-host recipe: needs hosts a and b",
    r"^docker run": "needs Docker and the TensorFlow Serving image",
    r"localhost:8501": "talks to the TensorFlow Serving container of the line before",
    r"^python -m bench(?!\S)(?!.*--quick)": "the full benchmark suite, about 20 minutes",
    r"torchvenv|textgen_vs_torch": "the PyTorch peer, in a virtual environment of its own",
    r"model\.init_from=": "needs a textgen run of the classifier's sizes, which the tiny settings change; "
                          "tests/test_embeddings.py trains one and starts from it",
}
# Commands documented to fail, matched with re.search: (exit code, why).
EXPECTED_CODE = {
    r"^seqapp train --resume\s*$": (2, "a fresh folder has no interrupted training to resume"),
}
COMMAND_TIMEOUT_S = 600


# -- Markdown ------------------------------------------------------------------------------------
def without_fences(text: str) -> list[tuple[int, str]]:
    """The numbered lines of a Markdown text outside its fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file (a repeated heading gets -1, -2, ...)."""
    found: set[str] = set()
    for _, line in without_fences(path.read_text(encoding="utf-8")):
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            name = base = anchor(heading.group(1))
            count = 0
            while name in found:
                count += 1
                name = f"{base}-{count}"
            found.add(name)
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """The link targets of a Markdown file, with their line numbers (inline code left out)."""
    found = []
    for number, line in without_fences(path.read_text(encoding="utf-8")):
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line)):
            found.append((number, target))
    return found


def test_every_relative_link_points_at_a_file_and_heading_that_exist():
    broken = []
    for page in LINKED:
        for number, target in links(page):
            if re.match(r"[a-z]+:", target):  # https:, mailto:: not checked here
                continue
            file_part, _, fragment = target.partition("#")
            linked = (page.parent / file_part).resolve() if file_part else page
            where = f"{page.relative_to(ROOT)}:{number}: {target}"
            if not linked.exists():
                broken.append(f"{where} (no such file)")
            elif fragment and (linked.suffix != ".md" or fragment not in anchors(linked)):
                broken.append(f"{where} (no heading #{fragment})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_anchors_as_github_does():
    assert anchor("Text generation (`textgen`)") == "text-generation-textgen"
    assert anchor("TensorFlow's log output") == "tensorflows-log-output"
    assert "tests" in anchors(README) and "textgen" in anchors(ROOT / "docs" / "settings.md")


def test_the_readme_is_short_and_links_to_every_reference_page():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES, \
        f"README.md has {len(text.splitlines())} lines; move reference text to docs/ (at most {README_MAX_LINES})"
    linked = {target.partition("#")[0] for _, target in links(README)}
    for page in [*PAGES, ROOT / "bench" / "README.md"]:
        assert str(page.relative_to(ROOT)) in linked, f"README.md does not link to {page.relative_to(ROOT)}"


# -- command blocks -------------------------------------------------------------------------------
@dataclass
class Block:
    """One ```bash fence: where it starts and its commands, with their line numbers."""

    page: Path
    line: int
    commands: list[tuple[int, str]] = field(default_factory=list)


def command_blocks(path: Path) -> list[Block]:
    """The ```bash fences of a Markdown file; continued lines joined, comment lines dropped."""
    blocks: list[Block] = []
    block, pending, start = None, "", 0
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if block is None:
            if stripped == "```bash":
                block = Block(path, number)
            continue
        if stripped == "```":
            blocks.append(block)
            block = None
            continue
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        start = start if pending else number
        pending += (" " if pending else "") + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            block.commands.append((start, pending))
            pending = ""
    return blocks


def split_unquoted(command: str, separators: tuple[str, ...]) -> list[str]:
    """``command`` cut at each separator that stands outside quotes (kept as its own item)."""
    parts, current, quote, index = [], "", None, 0
    while index < len(command):
        char = command[index]
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            found = next((sep for sep in separators if command.startswith(sep, index)), None)
            if found:
                parts += [current, found]
                current, index = "", index + len(found)
                continue
        current += char
        index += 1
    return [*parts, current]


def without_comment(command: str) -> str:
    """A shell command without its trailing ``# comment``."""
    pieces = split_unquoted(command, (" #",))
    return pieces[0].rstrip()


def reason_exempt(part: str) -> str | None:
    """Why this command is not run, or None."""
    return next((why for pattern, why in EXEMPT.items() if re.search(pattern, part.strip())), None)


def expected_code(part: str) -> int:
    return next((code for pattern, (code, _) in EXPECTED_CODE.items() if re.search(pattern, part.strip())), 0)


def tiny_arguments(words: list[str], cwd: Path) -> list[str]:
    """``--set`` tiny overrides and ``--epochs 1`` for a ``seqapp [launch ... --] train TEMPLATE`` command."""
    from seqapp.tasks import REGISTRY, load_config

    words = [word for word in words if not re.match(r"^[A-Z_]+=", word)]  # VAR=value prefixes
    command = next((word for word in ("train", "tune") if word in words), None)  # a search trains runs too
    if words[:1] != ["seqapp"] or command is None:
        return []
    after = words[words.index(command) + 1:]
    if not after or after[0].startswith("-"):
        return []  # --resume and friends keep their saved settings
    template = str(cwd / after[0]) if (cwd / after[0]).exists() else after[0]
    task = REGISTRY[load_config(template).task]
    tiny = [*task.tiny.get("set", []), "train.jit_compile=false"]  # XLA's compile costs more than a tiny run saves
    trials = ["--trials", "2"] if command == "tune" else []  # the last --trials given counts: two trials show a search
    return [*(arg for value in tiny for arg in ("--set", value)), "--epochs", "1", *trials]


def with_tiny_settings(command: str, cwd: Path) -> str:
    """The command with tiny settings added to each ``seqapp train`` in it (pipes and ``&&`` kept)."""
    pieces = split_unquoted(command, ("&&", "||", "|", ";"))
    for index in range(0, len(pieces), 2):
        arguments, *redirect = split_unquoted(pieces[index], ("<", ">"))
        extra = tiny_arguments(shlex.split(arguments), cwd)
        if extra:
            pieces[index] = arguments.rstrip() + " " + shlex.join(extra) + " " + "".join(redirect)
    return "".join(pieces)


def with_real_runs(command: str, runs: Path) -> str:
    """Dated run folders of the docs (runs/<task>/20261125-130802) replaced by the newest real one."""
    def newest(match: re.Match) -> str:
        task_dir = runs / match.group(1)
        found = sorted(path for path in task_dir.iterdir() if not path.name.startswith(".")) \
            if task_dir.is_dir() else []
        assert found, f"no {match.group(1)} run yet for {match.group(0)}"
        return str(found[-1])
    return re.sub(r"runs/(\w+)/\d{8}-\d{6}", newest, command)


class DocServer:
    """A ``seqapp serve`` line of a command block, started on a free port (:class:`conftest.Server`);
    the block's URLs are pointed at it."""

    def __init__(self, command: str, cwd: Path, env: dict) -> None:
        options = shlex.split(command)[2:]
        self.documented = "8000"
        if "--port" in options:
            at = options.index("--port") + 1
            self.documented, options[at] = options[at], "0"
        self.server = Server(None, *options, cwd=cwd, env=env)
        self.port = self.server.url.rsplit(":", 1)[1]

    def point_at(self, command: str) -> str:
        """The command with the documented port replaced by this server's."""
        return re.sub(rf"\b(localhost|127\.0\.0\.1|0\.0\.0\.0):{self.documented}\b", rf"\1:{self.port}", command)


def seqapp_calls(shell: str) -> list[list[str]] | None:
    """The argument lists of a command made only of ``seqapp`` calls joined by ``&&``, each run
    in this test process (TensorFlow is loaded once, not once a command); None when the command
    needs a shell: pipes, redirections, variables, globs, other programs, ``serve`` and ``launch``."""
    calls = []
    for part in split_unquoted(shell, ("&&",))[::2]:
        if re.search(r"[$`]", part) or len(split_unquoted(part, ("|", "<", ">", ";", "*", "?", "~"))) > 1:
            return None
        words = shlex.split(part)
        if words[:1] != ["seqapp"] or words[1:2] in (["serve"], ["launch"]):
            return None
        calls.append(words[1:])
    return calls


def run_in_process(calls: list[list[str]], cwd: Path, env: dict) -> tuple[int, str]:
    """Run ``seqapp`` calls one after another in ``cwd`` with ``env``, as ``a && b`` would; the exit
    code and output of the last one run."""
    from typer.testing import CliRunner

    from seqapp.cli import app

    changed = {name: value for name, value in env.items() if os.environ.get(name) != value}
    before = Path.cwd()
    os.chdir(cwd)
    try:
        for args in calls:
            result = CliRunner().invoke(app, args, env=changed)
            output = f"--- output\n{result.output[-3000:]}"
            if result.exception is not None and not isinstance(result.exception, SystemExit):
                output += "\n" + "".join(traceback.format_exception(result.exception))[-3000:]
            if result.exit_code != 0:
                break
    finally:
        os.chdir(before)
    return result.exit_code, output


def make_example_files(folder: Path) -> None:
    """The data files the examples name, made from the bundled data."""
    data = ROOT / "data"
    shutil.copytree(ROOT / "tasks", folder / "tasks")
    shutil.copy(data / "corpus.txt", folder / "my.txt")
    shutil.copy(data / "sentiment.tsv", folder / "reviews.tsv")
    rows = [line.split("\t") for line in (data / "sentiment.tsv").read_text(encoding="utf-8").splitlines() if line]
    (folder / "reviews.txt").write_text("".join(f"{text}\n" for text, _ in rows[:40]), encoding="utf-8")
    with open(folder / "tweets.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("id", "text", "label"), *((n, text, label) for n, (text, label) in
                                                                enumerate(rows))])
    (folder / "reviews").mkdir()
    for part in (0, 1):
        (folder / "reviews" / f"part{part}.tsv").write_text(
            "".join(f"{text}\t{label}\n" for text, label in rows[part::2]), encoding="utf-8")
    pairs = (data / "pairs.tsv").read_text(encoding="utf-8")
    (folder / "my_pairs.tsv").write_text(pairs, encoding="utf-8")
    (folder / "fra-eng.tsv").write_text("".join(f"{line}\tCC-BY 2.0 (France) Attribution: tatoeba.org\n"
                                                for line in pairs.splitlines() if line), encoding="utf-8")
    sources = sorted({line.split("\t")[0] for line in pairs.splitlines() if line})
    (folder / "sentences.txt").write_text("".join(f"{text}\n" for text in sources[:20]), encoding="utf-8")
    (folder / "unlabelled.txt").write_text("".join(f"{text}\n" for text, _ in rows), encoding="utf-8")
    words = sorted({word for text, _ in rows for word in text.lower().split()})  # GloVe lines, the tiny size
    (folder / "glove.6B.50d.txt").write_text("".join(
        f"{word} {' '.join(f'{(zlib.crc32(word.encode()) >> bit) % 7 / 7 - 0.4:.3f}' for bit in range(8))}\n"
        for word in words), encoding="utf-8")
    make_series_files(folder)
    make_tagging_files(folder, data / "tagging.tsv")


def make_series_files(folder: Path) -> None:
    """A daily temperature CSV (Date,Temp) and a monthly passengers CSV with a trend."""
    import math

    temps = [f"1981-{1 + day // 28:02d}-{1 + day % 28:02d},{11 + 6 * math.sin(day / 9) + (day * 7919 % 13) / 6:.1f}"
             for day in range(300)]
    (folder / "temps.csv").write_text("Date,Temp\n" + "\n".join(temps) + "\n", encoding="utf-8")
    months = [f"{1949 + month // 12}-{1 + month % 12:02d}-01,{int(112 + 2 * month + 30 * math.sin(month / 1.9))}"
              for month in range(144)]
    (folder / "AirPassengers.csv").write_text('"date","value"\n' + "\n".join(months) + "\n", encoding="utf-8")


def make_tagging_files(folder: Path, tagged: Path) -> None:
    """CoNLL-U dev and test files, and a CoNLL-2003 style file, from token<TAB>tag sentences."""
    sentences = [[line.split("\t") for line in chunk.splitlines()]
                 for chunk in tagged.read_text(encoding="utf-8").strip().split("\n\n")]

    def conllu(part: list) -> str:
        return "".join("# sent_id = {}\n{}\n".format(number, "".join(
            f"{index}\t{token}\t{token.lower()}\t{tag}\t_\t_\t0\t_\t_\t_\n" for index, (token, tag) in
            enumerate(sentence, 1))) for number, sentence in enumerate(part))
    (folder / "en_ewt-ud-dev.conllu").write_text(conllu(sentences[:300]), encoding="utf-8")
    (folder / "en_ewt-ud-test.conllu").write_text(conllu(sentences[300:]), encoding="utf-8")
    ner = "-DOCSTART- -X- -X- O\n\n" + "".join("".join(
        f"{token} {tag} O {'B-MISC' if tag == 'PROPN' else 'O'}\n" for token, tag in sentence) + "\n"
        for sentence in sentences)
    (folder / "ner.txt").write_text(ner, encoding="utf-8")


def run_page(page: Path, folder: Path) -> list[str]:
    """Run every command block of ``page`` in ``folder``; the lines of a short report."""
    make_example_files(folder)
    runs = folder / "runs"
    (folder / "tmp").mkdir()
    env = {**os.environ, "SEQAPP_RUNS": str(runs), "PYTHONUNBUFFERED": "1", "TMPDIR": str(folder / "tmp"),
           "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}  # this seqapp
    report, start = [], time.monotonic()
    for block in command_blocks(page):
        servers: list[DocServer] = []
        try:
            for number, command in block.commands:
                where = f"{page.relative_to(ROOT)}:{number}"
                command = without_comment(command)
                parts = split_unquoted(command, ("&&",))[::2]
                kept = [part.strip() for part in parts if not reason_exempt(part)]
                if all(part.startswith("cd ") for part in kept):  # nothing left but the cd before it
                    kept = []
                if not kept:
                    why = next(reason for reason in map(reason_exempt, parts) if reason)
                    report.append(f"{where}: exempt ({why}): {command}")
                    continue
                command = " && ".join(kept)
                if re.match(r"^seqapp serve\b", command):
                    servers.append(DocServer(with_real_runs(command, runs), folder, env))
                    report.append(f"{where}: started: {command}")
                    continue
                for server in servers:
                    command = server.point_at(command)
                if command.startswith("curl "):
                    command = "curl --fail-with-body " + command.removeprefix("curl ")
                shell = with_real_runs(with_tiny_settings(command, folder), runs)
                began = time.monotonic()
                calls = seqapp_calls(shell)
                if calls is None:
                    done = subprocess.run(["bash", "-c", shell], cwd=folder, env=env, capture_output=True, text=True,
                                          timeout=COMMAND_TIMEOUT_S, stdin=subprocess.DEVNULL)
                    code = done.returncode
                    output = f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
                else:
                    code, output = run_in_process(calls, folder, env)
                want = expected_code(command)
                assert code == want, f"{where}: exit {code}, expected {want}\n$ {shell}\n{output}"
                how = "in-process" if calls is not None else "shell"
                report.append(f"{where}: ok ({how}, {time.monotonic() - began:.1f} s): {command}")
        finally:
            for server in servers:
                code, log = server.server.stop()
                assert code == 0, f"{page.name}:{block.line}: seqapp serve exited {code}:\n{log}"
    report.append(f"{page.relative_to(ROOT)}: {time.monotonic() - start:.0f} s")
    return report


def test_the_command_parsing_keeps_quotes_pipes_and_redirections(tmp_path):
    (tmp_path / "my.yaml").write_text("task: sentiment\n", encoding="utf-8")
    tiny = with_tiny_settings('cat a.txt | seqapp train my.yaml --set "x=a | b" > out.txt', tmp_path)
    assert tiny.startswith('cat a.txt | seqapp train my.yaml --set "x=a | b" --set model.units=8 ')
    assert tiny.endswith("--epochs 1 > out.txt")
    assert with_tiny_settings("seqapp train --resume", tmp_path) == "seqapp train --resume"
    assert "--epochs 1" in with_tiny_settings("seqapp launch --workers 2 -- train textgen --epochs 3", tmp_path)
    assert without_comment('seqapp generate --seed "a # b"   # comment') == 'seqapp generate --seed "a # b"'
    assert seqapp_calls('seqapp train textgen --set "x=a | b" && seqapp generate --seed "hi there"') \
        == [["train", "textgen", "--set", "x=a | b"], ["generate", "--seed", "hi there"]]
    for shell_only in ("cat a.txt | seqapp predict -", "seqapp predict - < a.txt", "X=1 seqapp train textgen",
                       'seqapp predict "$HOME"', "seqapp serve --port 8000", "seqapp train a && ls *.txt",
                       "seqapp launch --workers 2 -- train textgen"):
        assert seqapp_calls(shell_only) is None, shell_only
    block = command_blocks(README)[0]
    assert [reason_exempt(part) is None for part in split_unquoted(block.commands[0][1], ("&&",))[::2]] \
        == [False, True, True]


RUNNABLE = [page for page in (README, *PAGES) if command_blocks(page)]


@pytest.mark.process
@pytest.mark.parametrize("page", RUNNABLE, ids=[str(page.relative_to(ROOT)) for page in RUNNABLE])
def test_every_command_block_runs(page, tmp_path):
    report = run_page(page, tmp_path / "work")
    print("\n".join(report))
