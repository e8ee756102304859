"""``seqapp launch --workers N -- train ...``: N local worker processes of one multi-worker training.

Each worker is ``python -m seqapp <command...>`` with its own ``TF_CONFIG`` naming every
worker on a free loopback port, the way each machine of a real cluster would be started.
The chief's (worker 0's) output streams to this terminal; the others' goes to
``worker-<i>.log`` in a log folder. If a worker fails, the rest are stopped and the launch
fails in one line: a training whose peer died would otherwise wait on it for ever.
This module needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

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


def start_workers(command: list[str], workers: int, log_dir: Path) -> list[subprocess.Popen]:
    """Start the workers: the chief on this terminal, the others writing to their logs."""
    processes = []
    for index, tf_config in enumerate(tf_configs(free_ports(workers))):
        env = {**os.environ, "TF_CONFIG": tf_config}
        output = None if index == 0 else open(log_dir / f"worker-{index}.log", "wb")  # noqa: SIM115
        processes.append(subprocess.Popen([sys.executable, "-m", "seqapp", *command], env=env,
                                          stdout=output, stderr=subprocess.STDOUT if output else None))
        if output is not None:
            output.close()
    return processes


def wait_all(processes: list[subprocess.Popen], log_dir: Path) -> None:
    """Wait for every worker; on the first failure stop the others and raise one line."""
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                index, code = failed[0]
                where = "its output is above" if index == 0 else f"see {log_dir / f'worker-{index}.log'}"
                raise SeqappError(f"worker {index} of {len(processes)} failed (exit {code}); {where}")
            if all(code == 0 for code in codes):
                return
            time.sleep(0.2)
    finally:
        stop(processes)


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
    folder = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="seqapp-launch-"))
    folder.mkdir(parents=True, exist_ok=True)
    if workers > 1:
        typer.echo(f"launching {workers} workers; workers 1-{workers - 1} log to {folder}", err=True)
    try:
        wait_all(start_workers(list(command), workers, folder), folder)
    except KeyboardInterrupt:  # the workers had the signal too: the chief has said what was kept
        raise typer.Exit(130) from None
