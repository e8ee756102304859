"""Shared fixtures and the test markers.

The default run (``python -m pytest -q -n 2``, two tests at a time) is the fast suite. Two markers keep the rest out of
it, each run by ``.ci/run`` as a step of its own:

- ``process``: tests that start processes, servers or several workers, or kill trainings
  (``python -m pytest -q -m process --runprocess``);
- ``slow``: real data sets and many epochs (``python -m pytest -q -m slow --runslow``).

A test never carries both. The tiny run of each task (its ``tiny`` settings, one epoch) is
trained once per session (:func:`tiny_runs`) and shared: a test that changes a run works on
a copy (:func:`copy_run`), and the session checks at its end that no shared run changed.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", help="also run tests marked slow")
    parser.addoption("--runprocess", action="store_true",
                     help="also run tests marked process (processes, servers, workers, killed trainings)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    for marker, option in (("slow", "--runslow"), ("process", "--runprocess")):
        if config.getoption(option):
            continue
        skip = pytest.mark.skip(reason=f"{marker}: run with {option}")
        for item in items:
            if marker in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def quiet_tensorflow() -> None:
    """Start TensorFlow once, without its start-up notes."""
    from seqapp import backend

    backend.start()


@pytest.fixture(scope="module", autouse=True)
def freeze_what_earlier_modules_left():
    """After each test module, its survivors (models, graphs, traced functions) move out of the
    garbage collector's sight (:func:`gc.freeze`): a full collection then scans only what later
    tests make. Without it each collection walks every object of the session so far, and
    TensorFlow's tracing, which makes many objects, slowed by up to 18 s a test late in the run."""
    yield
    gc.collect()
    gc.freeze()


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the project; the test is skipped when they are absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    return SHARED_DATA


@pytest.fixture
def cli():
    """Invoke the seqapp CLI in-process; returns the CliRunner result."""
    from typer.testing import CliRunner

    from seqapp.cli import app

    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, [str(arg) for arg in args], input=input)

    return invoke


# A small text with a repeated, learnable pattern (about 5,000 characters: 14 batches of the
# tiny textgen settings, where the bundled corpus gives 136).
CORPUS = "".join(f"ANNA:\nhello there, the boat is {word}.\n\nBEN:\nhello anna, the sea is {word}.\n\n"
                 for word in ("blue", "calm", "grey", "wild", "cold", "warm") * 12)


def write_corpus(path: Path) -> Path:
    """:data:`CORPUS` written to ``path``."""
    path.write_text(CORPUS, encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """A small text file with a repeated, learnable pattern (:data:`CORPUS`)."""
    return write_corpus(tmp_path / "corpus.txt")


def tiny_config(name: str, *extra: str, epochs: int = 1, values: dict | None = None, data_file: Path | None = None):
    """The tiny settings of task ``name`` (``REGISTRY[name].tiny``) for ``epochs`` epochs, then ``extra``."""
    from seqapp.tasks import REGISTRY, load_config

    return load_config(name, [*REGISTRY[name].tiny.get("set", []), *extra], {"train.epochs": epochs, **(values or {})},
                       data_file=data_file)


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory):
    """``tiny_runs(task)``: the task's tiny run (its ``tiny`` settings, one epoch, LiteRT graphs
    included), trained the first time a test asks for it and shared by the whole session.

    Read it, never change it: a test that changes a run changes :func:`copy_run`'s copy. The
    session fails at its end if a shared run changed.
    """
    from seqapp.training import train

    trained: dict = {}

    def get(name: str):
        if name not in trained:
            run = train(tiny_config(name), tmp_path_factory.mktemp(f"tiny-{name}"), verbose=0, log=lambda _: None)
            trained[name] = run, hash_tree(run.path)
        return trained[name][0]

    yield get
    changed = sorted(name for name, (run, digest) in trained.items() if hash_tree(run.path) != digest)
    assert not changed, f"a test changed the shared tiny run of {changed}; change a copy_run copy instead"


@pytest.fixture(scope="session")
def sentiment_run(tiny_runs) -> Path:
    """The folder of the session's tiny sentiment run (read it, never change it)."""
    return tiny_runs("sentiment").path


@pytest.fixture(scope="session")
def translate_run(tiny_runs) -> Path:
    """The folder of the session's tiny translate run (read it, never change it)."""
    return tiny_runs("translate").path


@pytest.fixture(scope="session")
def sine_run(tiny_runs) -> Path:
    """The folder of the session's tiny sine run (read it, never change it)."""
    return tiny_runs("sine").path


def copy_run(run, into: Path):
    """A copy of ``run`` (a Run or its folder) as ``into/<task>/<its folder name>``, loaded: the run
    to change where a test changes a shared one."""
    from seqapp.tasks import load_run

    source = Path(getattr(run, "path", run))
    target = into / load_run(source).task / source.name
    shutil.copytree(source, target)
    return load_run(target)


def hash_tree(folder: Path) -> str:
    """A digest of every file name and byte under ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.fixture
def tree_hash() -> Callable[[Path], str]:
    """``tree_hash(folder)``: a digest of a folder, to prove that nothing under it changed."""
    return hash_tree


BLOCK_SEQAPP = r'''
import importlib.abc, sys

class NoSeqapp(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "seqapp":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NoSeqapp())
'''


def without_seqapp(script: str, *args: str, cwd: Path, input: str | None = None) -> subprocess.CompletedProcess:
    """Run a Python script in a fresh, isolated interpreter where seqapp cannot be imported
    (what a user without seqapp has), with ``args``, ``input`` and ``cwd`` as given."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-I", "-c", BLOCK_SEQAPP + script, *args], input=input,
                          capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def answers_without_tensorflow(commands: list[list[str]], folder: Path) -> list[str]:
    """Run each seqapp command (its arguments) in one fresh process where importing TensorFlow or
    Keras fails; what each wrote to stderr, ending in ``exit N`` (or ``crashed ...``)."""
    poison = folder / "poison"
    for module in ("tensorflow", "keras"):
        (poison / module).mkdir(parents=True, exist_ok=True)
        (poison / module / "__init__.py").write_text(f"raise ImportError('{module} was imported')\n")
    script = ("import sys\nfrom seqapp.cli import app\nfor args in ARGS:\n"
              "    try:\n        app(args, prog_name='seqapp')\n"
              "    except SystemExit as exc:\n        print('exit', exc.code, file=sys.stderr)\n"
              "    except Exception as exc:\n        print('crashed', repr(exc), file=sys.stderr)\n"
              "    print('--end--', file=sys.stderr)\n")
    commands = [[str(arg) for arg in command] for command in commands]
    done = subprocess.run([sys.executable, "-c", f"ARGS = {commands!r}\n{script}"],
                          env={**os.environ, "PYTHONPATH": str(poison)}, capture_output=True, text=True, timeout=300)
    answers = done.stderr.split("--end--\n")
    assert len(answers) == len(commands) + 1, done.stderr[-3000:]
    return answers[:-1]


# -- seqapp serve in a subprocess ------------------------------------------------------------
SERVE_START_S = 120


class Server:
    """A running ``seqapp serve`` subprocess and what it wrote to stderr."""

    def __init__(self, run: Path | None, *options: str, cwd: Path | None = None, env: dict | None = None,
                 files: int | None = None) -> None:
        """``seqapp serve --run RUN --port 0 OPTIONS`` (no ``--run`` when ``run`` is None; a ``--port``
        among ``options`` wins) in ``cwd`` with ``env`` added to this environment; ``files``: the
        limit on open files of the server process (soft and hard), as ``ulimit -n`` sets it."""
        command = [sys.executable, "-m", "seqapp", "serve", *(["--run", str(run)] if run else []), "--port", "0",
                   *options]

        def limit_files() -> None:
            import resource

            resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
                                        preexec_fn=limit_files if files else None)
        self.lines: list[str] = []
        deadline = time.monotonic() + SERVE_START_S
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise AssertionError(f"seqapp serve exited ({self.process.wait()}): {''.join(self.lines)}")
            self.lines.append(line)
            found = re.search(r"on (http://\S+?); API docs", line)
            if found:
                self.url = found.group(1)
                break
        else:
            self.process.kill()
            raise AssertionError(f"seqapp serve did not start in {SERVE_START_S} s: {''.join(self.lines)}")
        self.drain = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.drain.start()

    def call(self, path: str, body: object = None, method: str | None = None, raw: bytes | None = None,
             headers: dict | None = None) -> tuple[int, bytes]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data,
                                         method=method or ("GET" if data is None else "POST"),
                                         headers={"Content-Type": "application/json", **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def json(self, path: str, body: object = None, **kwargs) -> tuple[int, dict]:
        status, text = self.call(path, body, **kwargs)
        return status, json.loads(text)

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, str]:
        """Send ``sig``; the exit code and all of stderr."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.drain.join(timeout=10)
        return code, "".join(self.lines)


@contextmanager
def serving(run: Path, *options: str, **kwargs):
    server = Server(run, *options, **kwargs)
    try:
        yield server
    finally:
        server.stop()
