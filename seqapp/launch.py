"""``seqapp launch --workers N -- train ...``: N local worker processes of one multi-worker training.

Each worker is ``python -m seqapp <command...>`` with its own ``TF_CONFIG`` naming every
worker on a free loopback port, the way each machine of a real cluster would be started.
The chief's (worker 0's) output streams to this terminal; the others' goes to
``worker-<i>.log`` in a log folder. If a worker fails, the rest are stopped and the launch
fails in one line: a training whose peer died would otherwise wait on it for ever. Each
worker runs in a session of its own: a Ctrl-C or SIGTERM given to the launch reaches every
worker exactly once, through the launch (:class:`Relay`), so no worker takes a first
signal for a second one and stops half-way through writing its epoch's state.
Each worker's draft records the launch's id (:data:`seqapp.drafts.LAUNCH_ENV`), so a bare
``train --resume`` resumes the drafts of one earlier launch only (:func:`resume_choice`).
This module needs no TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from seqapp import drafts
from seqapp.errors import SeqappError


def worker_index() -> int:
    """This process's index in the cluster ``TF_CONFIG`` names (0: the chief, or no cluster)."""
    from seqapp.distribute import cluster

    return cluster(os.environ.get("TF_CONFIG"))[1]


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free now (all held open together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(ports: list[int]) -> list[str]:
    """The ``TF_CONFIG`` of each worker of a loopback cluster on ``ports``."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}) for i in range(len(ports))]


def log_folder(log_dir: Path | None) -> Path:
    """The folder of the workers' logs: ``log_dir``, created if missing, or a new temporary one;
    one line when it is a file or cannot be made or written."""
    try:
        if log_dir is None:
            return Path(tempfile.mkdtemp(prefix="seqapp-launch-"))
        if log_dir.exists() and not log_dir.is_dir():
            raise SeqappError(f"--log-dir {log_dir} is a file, not a folder; give a folder (it is created if "
                              "missing) or leave --log-dir out")
        log_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = f"--log-dir {log_dir}" if log_dir is not None else f"a log folder in {tempfile.gettempdir()}"
        raise SeqappError(f"cannot create {where} ({exc.strerror or exc}); give --log-dir a folder you can "
                          "write to") from None
    if not os.access(log_dir, os.W_OK | os.X_OK):
        raise SeqappError(f"cannot write in --log-dir {log_dir}; give a folder you can write to")
    return log_dir


def open_logs(log_dir: Path, workers: int) -> list:
    """The log files of workers 1 to ``workers - 1``, opened before any worker starts."""
    handles: list = []
    try:
        for index in range(1, workers):
            handles.append(open(log_dir / f"worker-{index}.log", "wb"))  # noqa: SIM115 (closed by start_workers)
    except OSError as exc:
        for handle in handles:
            handle.close()
        raise SeqappError(f"cannot write {log_dir / f'worker-{len(handles) + 1}.log'} ({exc.strerror or exc}); "
                          "give --log-dir a folder you can write to") from None
    return handles


def start_workers(command: list[str], workers: int, log_dir: Path,
                  processes: list[subprocess.Popen] | None = None) -> list[subprocess.Popen]:
    """Start the workers, appending each to ``processes`` as it starts: the chief on this
    terminal, the others writing to their logs; each in a session of its own (see :class:`Relay`)."""
    processes = [] if processes is None else processes
    logs = open_logs(log_dir, workers)
    try:
        for index, tf_config in enumerate(tf_configs(free_ports(workers))):
            env = {**os.environ, "TF_CONFIG": tf_config}
            output = logs[index - 1] if index else None
            processes.append(subprocess.Popen([sys.executable, "-m", "seqapp", *command], env=env, stdout=output,
                                              stderr=subprocess.STDOUT if output else None, start_new_session=True))
    except OSError as exc:
        stop(processes)
        raise SeqappError(f"cannot start worker {len(processes)} ({exc.strerror or exc})") from None
    finally:
        for handle in logs:
            handle.close()
    return processes


class Relay:
    """SIGINT and SIGTERM given to the launch, passed on to every worker.

    The workers run in sessions of their own, so a terminal's Ctrl-C reaches the launch only;
    this sends it on to each worker once (a second Ctrl-C sends it again: a worker stops at
    once on its second signal). The launch then waits for the workers to end by themselves
    (:func:`wait_all`) and exits 128 + the signal's number.
    """

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.signum: int | None = None
        self.since = 0.0
        self.sent: set[int] = set()
        self._previous: dict[int, object] = {}

    def __enter__(self) -> Relay:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is None:
            self.signum, self.since = signum, time.monotonic()
        self.forward(signum, again=True)

    def forward(self, signum: int, again: bool = False) -> None:
        """Send ``signum`` to the running workers (``again``: those that had it already too)."""
        for process in self.processes:
            if process.poll() is None and (again or process.pid not in self.sent):
                self.sent.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)


STOP_WAIT_S = 20.0  # after a signal, how long the workers have to end before they are stopped


def wait_all(processes: list[subprocess.Popen], log_dir: Path, relay: Relay | None = None) -> int | None:
    """Wait for every worker; on the first failure stop the others and raise one line. After a
    signal (``relay``), wait for the workers to end by themselves (at most STOP_WAIT_S, then
    stop them) and return the signal's number."""
    try:
        while True:
            codes = [process.poll() for process in processes]
            if relay is not None and relay.signum is not None:
                relay.forward(relay.signum)  # a worker started after the signal came
                if all(code is not None for code in codes) or time.monotonic() - relay.since > STOP_WAIT_S:
                    return relay.signum
            else:
                failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
                if failed:
                    raise SeqappError(failure(*failed[0], len(processes), log_dir))
                if all(code == 0 for code in codes):
                    return None
            time.sleep(0.1)
    finally:
        stop(processes)


def failure(index: int, code: int, workers: int, log_dir: Path) -> str:
    """One line for a failed worker: its exit code, its own error line (from its log), its log."""
    if index == 0:
        return f"worker 0 of {workers} failed (exit {code}); its output is above"
    path = log_dir / f"worker-{index}.log"
    reason = last_error(path)
    return f"worker {index} of {workers} failed (exit {code}){f': {reason}' if reason else ''}; see {path}"


def last_error(path: Path) -> str | None:
    """The last ``error: ...`` line a worker wrote to its log, without the prefix; None if none."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(handle.seek(0, os.SEEK_END) - 65536, 0))
            lines = handle.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    errors = [line[len("error: "):].strip() for line in lines if line.startswith("error: ")]
    return errors[-1][:300] if errors else None


def stop(processes: list[subprocess.Popen]) -> None:
    """Terminate the workers still running, then kill those that do not stop within 10 s."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# The options of 'seqapp train' that take a value (the rest are flags).
TRAIN_VALUE_OPTIONS = ("--data", "--epochs", "--out", "--name", "--random-seed", "--set")


def resume_choice(command: list[str], workers: int) -> list[str]:
    """``train --resume`` without a draft: the same command naming the one draft under ``--out``
    that an interrupted launch of ``workers`` workers left (its workers' backups go with it),
    said on stderr with why; one line (exit 2) when there is none or more than one. Any other
    command is returned as it is."""
    resume, draft, out = resume_options(command)
    if not resume or draft is not None or out is None:
        return command
    chosen, passed = drafts.of_launch(out, workers)
    retry = f"seqapp launch --workers {workers} -- train --resume DRAFT"
    if not chosen:
        why = "; ".join(f"{path}: {reason}" for path, reason in list(passed.items())[:3])
        raise SeqappError(f"no interrupted training of a launch of {workers} workers in {out} to resume"
                          + (f" ({why})" if why else "") + f"; name a draft to resume it anyway: {retry}")
    if len(chosen) > 1:
        raise SeqappError(f"{len(chosen)} interrupted launches of {workers} workers could be resumed in {out} "
                          f"({', '.join(map(str, chosen))}); name one: {retry} (remove the other with "
                          "'seqapp runs --clean-drafts DRAFT')")
    others = f"; {len(passed)} other draft(s) there are not: see 'seqapp runs --drafts'" if passed else ""
    typer.echo(f"resuming {chosen[0]}: the interrupted training begun by a launch of {workers} workers, with "
               f"every worker's backup{others}", err=True)
    return [command[0], str(chosen[0]), *command[1:]]


def resume_options(command: list[str]) -> tuple[bool, str | None, Path | None]:
    """Of a ``train`` command: whether it has --resume, the DRAFT it names, its --out
    (default ``$SEQAPP_RUNS`` or ``runs``; None when --out has no value)."""
    if command[:1] != ["train"]:
        return False, None, None
    resume, draft, out = False, None, os.environ.get("SEQAPP_RUNS") or "runs"
    words = iter(command[1:])
    for word in words:
        name, equals, value = word.partition("=")
        if name in TRAIN_VALUE_OPTIONS:
            value = value if equals else next(words, None)
            if name == "--out":
                out = value
        elif word == "--resume":
            resume = True
        elif word == "--":
            draft = next(words, draft)
        elif not word.startswith("-") and draft is None:
            draft = word
    return resume, draft, Path(out) if out else None


def launch(
    command: Annotated[list[str], typer.Argument(
        metavar="-- COMMAND...", show_default=False,
        help="The seqapp command every worker runs, after '--' (e.g. -- train textgen --epochs 3).")],
    workers: Annotated[int, typer.Option("--workers", min=1, max=64, help="Number of local worker processes.")] = 2,
    log_dir: Annotated[Path | None, typer.Option(
        "--log-dir", help="Folder for the other workers' logs (default: a new temporary folder).")] = None,
) -> None:
    """Run a seqapp command as a multi-worker training on this machine (train.distribute: auto)."""
    if not command:
        raise SeqappError("no command given; write it after '--', e.g. seqapp launch --workers 2 -- train textgen")
    command = resume_choice(list(command), workers)  # a bare 'train --resume' takes this launch's drafts only
    os.environ[drafts.LAUNCH_ENV] = uuid.uuid4().hex[:12]  # recorded in the draft of each worker (started below)
    folder = log_folder(log_dir)
    if workers > 1:
        typer.echo(f"launching {workers} workers; workers 1-{workers - 1} log to {folder}", err=True)
    with Relay() as relay:  # a Ctrl-C or SIGTERM reaches each worker once, through the launch
        signum = wait_all(start_workers(list(command), workers, folder, relay.processes), folder, relay)
    if signum is not None:  # each worker has said what it kept
        raise typer.Exit(128 + signum)
