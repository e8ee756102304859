"""End-to-end command latency: a fresh process each time, wall time and peak RSS of each.

Each command is started with ``subprocess.Popen`` and reaped with ``os.wait4``, whose
resource usage gives the process's peak resident set (``ru_maxrss``, KB on Linux; the
largest of the process and the children it waited for). Commands are measured round-robin
(one of each, then the next round) so that a slow spell on a shared machine spreads over
all of them; the figure is the median wall time, and the largest peak RSS. Each command is
started from a small launcher process (this file run as a script), since a child's
``ru_maxrss`` starts from its parent's peak at the fork: the launcher's own RSS, about
14 MB, is the floor of what can be measured.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def seqapp_command() -> list[str]:
    """The ``seqapp`` executable of this Python's installation, else the one on PATH, else ``python -m seqapp``."""
    beside = Path(sys.executable).parent / "seqapp"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    on_path = shutil.which("seqapp")
    return [on_path] if on_path else [sys.executable, "-m", "seqapp"]


def lists_option(command: list[str], option: str) -> bool:
    """True when ``command --help`` mentions ``option`` (e.g. whether ``seqapp generate`` has ``--engine``)."""
    try:
        done = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0 and option in done.stdout


def spawn(command: list[str], timeout: float) -> dict:
    """Run ``command`` once (stdout to a file) and reap it with ``os.wait4``.

    Returns its wall seconds, peak RSS (KB), exit status, output line count and the end of
    its stderr. Call it from a small process (see :func:`run_process`): a child's
    ``ru_maxrss`` starts from its parent's peak at the fork.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {"wall_s": wall, "peak_rss_kb": usage.ru_maxrss, "rc": proc.returncode,
                "lines": out.read().count(b"\n"), "stderr": err.read().decode(errors="replace").strip()[-400:]}


def run_process(command: list[str], timeout: float = 900) -> dict:
    """Run ``command`` once from a fresh, small launcher process (this file as a script); see :func:`spawn`.

    The launcher keeps this (large) process's peak RSS out of the child's. Raises
    RuntimeError with the end of the command's stderr when it fails or runs past ``timeout``.
    """
    launcher = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--timeout", str(timeout), "--", *command]
    done = subprocess.run(launcher, capture_output=True, text=True, timeout=timeout + 120)
    if done.returncode != 0:
        raise RuntimeError(f"launcher failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    if figures["rc"] != 0:
        raise RuntimeError(f"{' '.join(command[-4:])} exited {figures['rc']}: {figures['stderr']}")
    return figures


def summarise(samples: list[dict]) -> dict:
    """Median wall time, each run's time, the largest peak RSS and the output lines of one command's runs."""
    return {"median_s": round(statistics.median(s["wall_s"] for s in samples), 3),
            "runs_s": [round(s["wall_s"], 3) for s in samples],
            "peak_rss_kb": max(s["peak_rss_kb"] for s in samples),
            "runs_rss_kb": [s["peak_rss_kb"] for s in samples], "lines": samples[-1]["lines"]}


def measure(commands: dict[str, list[str]], reps: dict[str, int]) -> dict[str, dict]:
    """Each command ``reps[name]`` times, round-robin; a failing command gets ``{"error": ...}`` and is dropped."""
    samples: dict[str, list[dict]] = {name: [] for name in commands}
    errors: dict[str, str] = {}
    for round_index in range(max(reps.values(), default=0)):
        for name, command in commands.items():
            if name in errors or round_index >= reps[name]:
                continue
            try:
                samples[name].append(run_process(command))
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                errors[name] = str(exc)
    return {name: {"error": errors[name]} if name in errors else summarise(samples[name]) for name in commands}

def main(argv: list[str]) -> None:
    """The launcher: ``latency.py --timeout SECONDS -- COMMAND...`` prints :func:`spawn`'s JSON."""
    timeout = float(argv[argv.index("--timeout") + 1])
    print(json.dumps(spawn(argv[argv.index("--") + 1:], timeout)))


if __name__ == "__main__":
    main(sys.argv[1:])
