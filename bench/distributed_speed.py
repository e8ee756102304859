#!/usr/bin/env python3
"""Benchmark: training throughput of one process against local multi-worker trainings.

Each row is a whole ``seqapp`` command in fresh processes, run one after the other in the
same benchmark run: ``seqapp train textgen`` in one process, then ``seqapp launch
--workers N -- train textgen`` with the same global batch and with the same per-replica
batch. Throughput is measured on the second epoch (the first one traces and compiles):
tokens per second = global batch x window length / seconds per step. On one machine the
workers share its cores, so a second worker adds communication, not compute; on several
machines each worker brings its own.

    python bench/distributed_speed.py [--data FILE] [--chars 300000] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, shared_dir  # noqa: E402

SEQ_LEN = 100
ONE_PROCESS = re.compile(r"(\d+)/\1 - .*? - (\d+(?:\.\d+)?)(m?s)/step")  # Keras's verbose=2 epoch line
WORKERS = re.compile(r"Epoch \d+/\d+ - (\d+) steps - (\d+(?:\.\d+)?)s training")  # seqapp's multi-worker line


def seconds_per_step(output: str) -> float:
    """Seconds per training step in the last epoch a training printed."""
    found = ONE_PROCESS.findall(output)
    if found:
        _, value, unit = found[-1]
        return float(value) / (1000.0 if unit == "ms" else 1.0)
    steps, seconds = WORKERS.findall(output)[-1]
    return float(seconds) / int(steps)


def run(command: list[str], out: Path) -> tuple[float, float]:
    """Run a seqapp command; (seconds per step in its last epoch, whole wall-clock seconds)."""
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "seqapp", *command, "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3600, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    wall = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return seconds_per_step(done.stdout + done.stderr), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--chars", type=int, default=300_000, help="train on the first CHARS characters")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32, help="the one process's batch")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: the benchmark needs the shared Tiny Shakespeare file")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "text.txt"
        data.write_text(args.data.read_text(encoding="utf-8")[: args.chars], encoding="utf-8")
        common = ["textgen", "--data", str(data), "--epochs", "2", "--set", "train.patience=0"]
        n = args.workers
        rows = [("1 process", args.batch, ["train", *common, "--set", f"train.batch_size={args.batch}"])]
        for per_replica in (args.batch // n, args.batch):
            rows.append((f"{n} workers, {per_replica} per replica", per_replica * n,
                         ["launch", "--workers", str(n), "--", "train", *common,
                          "--set", f"train.batch_size={per_replica}"]))
        print(f"LSTM(256) textgen, windows of {SEQ_LEN}, {args.chars:,} characters, second epoch; "
              f"load average {os.getloadavg()[0]:.2f} at the start")
        print(f"{'training':34}{'global batch':>13}{'s/step':>9}{'tokens/s':>10}{'command s':>11}")
        for label, global_batch, command in rows:
            step, wall = run(command, Path(tmp) / "runs")
            print(f"{label:34}{global_batch:>13}{step:>9.3f}{global_batch * SEQ_LEN / step:>10,.0f}{wall:>11.1f}",
                  flush=True)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
