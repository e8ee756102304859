"""``python -m bench.serve_bench [--run RUN]``: ``seqapp serve`` throughput and latency, batched vs not.

Two servers on the same sentiment run, one micro-batching ``/predict`` and one with
``--no-batching``, are started side by side in this one run and driven in turn: at each
client count, ``--rounds`` rounds alternating between them, so that a slow spell on a shared
machine hits both. Each client is a thread with one keep-alive ``http.client`` connection
sending ``/predict`` requests of one 20-word sentence, each as soon as the last is answered
(``--requests`` per client in all). The figures: requests/s, p50 and p99 latency, errors,
model calls; and each server's start-up time (spawn to its "serving" line: imports, loading
and warm-up) and peak RSS (``VmHWM``, read after the load). The clients share the machine
with the server, as they would on one host. Writes ``bench/results/serve.json`` and prints
a markdown table; nothing is asserted. Without ``--run`` it first trains
``seqapp train sentiment --epochs 1`` in a temporary folder."""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import RESULTS
from bench.machine import machine_info

SENTENCE = ("the film was a quiet and lovely surprise with a strong cast and a story that kept me "
            "watching closely")  # 20 words
START_TIMEOUT_S = 180


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.serve_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a sentiment run (default: train one, about 20 s)")
    parser.add_argument("--clients", default="1,8,32", help="concurrent clients, comma-separated")
    parser.add_argument("--requests", type=int, default=100, help="requests per client")
    parser.add_argument("--rounds", type=int, default=4, help="alternating rounds the requests are split into")
    parser.add_argument("--batch-wait-ms", type=float, default=3.0, help="the batched server's window")
    parser.add_argument("--out", type=Path, default=RESULTS / "serve.json", help="where to write the JSON")
    return parser.parse_args(argv)


def seqapp(*args: str) -> list[str]:
    return [sys.executable, "-m", "seqapp", *args]


def train_run(folder: Path) -> Path:
    """A default sentiment run, one epoch (what a user gets from 'seqapp train sentiment')."""
    subprocess.run(seqapp("train", "sentiment", "--epochs", "1", "--out", str(folder), "-q"), check=True,
                   stdout=subprocess.DEVNULL)
    return next((folder / "sentiment").iterdir())


class Server:
    """A ``seqapp serve --port 0`` subprocess; ``start_s`` is spawn to its "serving" line."""

    def __init__(self, run: Path, *options: str) -> None:
        started = time.perf_counter()
        self.process = subprocess.Popen(seqapp("serve", "--run", str(run), "--port", "0", *options),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError(f"seqapp serve exited: {''.join(self.log)}")
            self.log.append(line)
            found = re.search(r"on http://([\d.]+):(\d+);", line)
            if found:
                self.host, self.port = found.group(1), int(found.group(2))
                break
        else:
            raise RuntimeError("seqapp serve did not start in time")
        self.start_s = time.perf_counter() - started
        threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True).start()

    def get(self, path: str) -> dict:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
        connection.request("GET", path)
        return json.loads(connection.getresponse().read())

    def peak_rss_mb(self) -> float | None:
        status = Path(f"/proc/{self.process.pid}/status")
        found = re.search(r"VmHWM:\s+(\d+) kB", status.read_text()) if status.exists() else None
        return round(int(found.group(1)) / 1024, 1) if found else None

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


def client(server: Server, requests: int, latencies: list[float], errors: list[str]) -> None:
    """One client: a keep-alive connection, ``requests`` requests back to back."""
    body = json.dumps({"inputs": [SENTENCE]})
    headers = {"Content-Type": "application/json"}
    connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
    for _ in range(requests):
        start = time.perf_counter()
        try:
            connection.request("POST", "/predict", body, headers)
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or b'"label"' not in answer:
                errors.append(f"{response.status} {answer[:200]!r}")
        except (OSError, http.client.HTTPException) as exc:
            errors.append(repr(exc))
            connection.close()
            connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        latencies.append(time.perf_counter() - start)
    connection.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def drive(server: Server, clients: int, requests: int) -> dict:
    """``clients`` threads x ``requests`` requests: the latencies, seconds, errors and model calls."""
    client(server, 20, [], [])  # warm-up: connection paths, allocator
    before = server.get("/health")
    latencies: list[float] = []
    errors: list[str] = []
    threads = [threading.Thread(target=client, args=(server, requests, latencies, errors)) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    calls = server.get("/health")["model_calls"] - before["model_calls"]
    return {"latencies": latencies, "seconds": elapsed, "errors": errors, "model_calls": calls}


def summary(clients: int, parts: list[dict]) -> dict:
    """Rounds of :func:`drive` as one figure: requests/s over their total time, p50 / p99 latency (ms)."""
    latencies = [value for part in parts for value in part["latencies"]]
    errors = [error for part in parts for error in part["errors"]]
    seconds = sum(part["seconds"] for part in parts)
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_errors": errors[:3],
            "seconds": round(seconds, 3), "requests_per_s": round(len(latencies) / seconds, 1),
            "p50_ms": round(1000 * percentile(latencies, 0.5), 2),
            "p99_ms": round(1000 * percentile(latencies, 0.99), 2),
            "model_calls": sum(part["model_calls"] for part in parts)}


def table(results: dict) -> str:
    """The markdown table: batched beside unbatched at each client count."""
    lines = ["| clients | batched req/s | p50 ms | p99 ms | model calls | unbatched req/s | p50 ms | p99 ms "
             "| batched / unbatched |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for on, off in zip(results["batched"]["levels"], results["unbatched"]["levels"]):
        ratio = on["requests_per_s"] / off["requests_per_s"] if off["requests_per_s"] else float("nan")
        lines.append(f"| {on['clients']} | {on['requests_per_s']:.0f} | {on['p50_ms']:.1f} | {on['p99_ms']:.1f} "
                     f"| {on['model_calls']} / {on['requests']} | {off['requests_per_s']:.0f} | {off['p50_ms']:.1f} "
                     f"| {off['p99_ms']:.1f} | {ratio:.2f}x |")
    for mode in ("batched", "unbatched"):
        part = results[mode]
        lines.append(f"\n{mode}: start-up {part['start_s']:.2f} s (loading and warm-up {part['load_s']:.2f} s), "
                     f"peak RSS {part['peak_rss_mb']} MB, engine {part['engine']}, exit {part['exit_code']}, "
                     f"errors {sum(level['errors'] for level in part['levels'])}")
    return "\n".join(lines)


def run_bench(run: Path, levels: list[int], requests: int, wait_ms: float, rounds: int) -> dict:
    """Both servers up; at each client count, ``rounds`` alternating rounds on each (``requests``
    split between them, so a slow spell on the shared machine hits both); then both stopped."""
    servers = {"batched": Server(run, "--batch-wait-ms", str(wait_ms)), "unbatched": Server(run, "--no-batching")}
    results = {}
    try:
        for mode, server in servers.items():
            info = server.get("/info")
            results[mode] = {"start_s": round(server.start_s, 3), "load_s": info["load_seconds"],
                             "engine": info["engine"], "levels": []}
        for clients in levels:
            parts: dict[str, list] = {mode: [] for mode in servers}
            for i in range(rounds):
                share = requests // rounds + (i < requests % rounds)
                for mode, server in servers.items():
                    parts[mode].append(drive(server, clients, share))
            for mode in servers:
                results[mode]["levels"].append(summary(clients, parts[mode]))
        for mode, server in servers.items():
            results[mode]["peak_rss_mb"] = server.peak_rss_mb()
    finally:
        for mode, server in servers.items():
            code = server.stop()
            if mode in results:
                results[mode]["exit_code"] = code
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    levels = [int(part) for part in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        run = args.run or train_run(Path(folder))
        load_before = os.getloadavg()
        results = run_bench(run, levels, args.requests, args.batch_wait_ms, args.rounds)
        load_after = os.getloadavg()
    report = {"run": str(args.run or "a default sentiment run, 1 epoch"), "sentence_words": len(SENTENCE.split()),
              "requests_per_client": args.requests, "rounds": args.rounds, "batch_wait_ms": args.batch_wait_ms,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after], "machine": machine_info(512), **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    print(f"\nload average before {report['load_average_before']}, after {report['load_average_after']} "
          f"({report['machine']['cores_usable']} cores); wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
