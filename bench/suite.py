"""The whole suite: machine, training throughput, generation speed, the fast recurrent loop against
Keras's own on the word-level tasks, command latency, in that order.

Each section fills its part of the result from :func:`bench.report.empty_result`; a missing
peer or data set leaves ``null`` and a note. seqapp's own failures are not hidden.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import ROOT, fixtures, latency, peers, report, time_to_quality
from bench.flops import percent_of_bound
from bench.machine import machine_info
from bench.textgen_vs_torch import torch_side

LABELS = {"generate": "`seqapp generate --seed hello` (300 chars)",
          "predict_sentiment": '`seqapp predict "great"` (sentiment)',
          "predict_translate": '`seqapp predict "I am cold."` (translate)',
          "predict_sentiment_10k": "`seqapp predict --file` 10,000 sentiment lines",
          "predict_translate_1k": "`seqapp predict --file` 1,000 translations"}
MANY = ("predict_sentiment_10k", "predict_translate_1k")


@dataclass
class Settings:
    """What one run of the suite measures and for how long."""

    quick: bool
    torch_python: str | None
    data: Path
    cells: tuple[str, ...] = ("lstm", "gru", "simplernn")
    units: int = 256
    embed: int = 64
    batch: int = 64
    seq_len: int = 100
    train_seconds: float = 60.0
    quality_seconds: float = 120.0  # bench/time_to_quality.py: the default template against the peer; 0: skipped
    speedup_seconds: float = 15.0  # bench/fastrnn_speed.py --tasks: seconds per turn of each side (0: skipped)...
    speedup_rounds: int = 2  # ...and timed turns of each (after one warm-up turn)
    gen_steps: dict[str, int] = field(default_factory=lambda: {"batch_1": 20_000, "batch_64": 2_000})
    reps: int = 5
    many_reps: int = 5  # for the many-input calls (10,000 sentiment lines, 1,000 translations)
    tf_reps: int = 5  # for the ``--engine tf`` variants
    sentiment_lines: int = 10_000
    translate_lines: int = 1_000
    predict_tf: bool = True  # also time ``seqapp predict --engine tf`` where the option exists
    notes: list[str] = field(default_factory=list)  # notes known before the run (e.g. an unusable --torch-python)

    @classmethod
    def for_mode(cls, quick: bool, torch_python: str | None, data: Path) -> Settings:
        """The full settings, or the short ones of ``--quick``."""
        if not quick:
            return cls(False, torch_python, data)
        return cls(True, torch_python, data, cells=("lstm",), train_seconds=10.0, quality_seconds=0.0,
                   speedup_seconds=0.0, speedup_rounds=1, gen_steps={"batch_1": 2_000, "batch_64": 200}, reps=3,
                   many_reps=1, tf_reps=1, predict_tf=False)


def put(result: dict, figure: str, side: str, key: str, value: Any) -> None:
    """Set ``result[figure][side][key]``."""
    result[figure][side][key] = value


def error_tail(exc: BaseException, size: int = 300) -> str:
    """The end of a failed subprocess's stderr (or the exception's text), for a note."""
    stderr = getattr(exc, "stderr", None) or str(exc)
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    return stderr.strip()[-size:]


def peer_training(s: Settings, cell: str, save: Path | None, result: dict) -> dict | None:
    """Train the PyTorch peer for one cell; None (and a note) when it is missing or fails."""
    if s.torch_python is None or peers.peer_script("torch_charlm.py") is None:
        return None
    try:
        # 10 characters: the peer's own batch-1 timing is not used (bench/torch_gen_speed.py times it)
        return torch_side(s.torch_python, s.data, cell, s.units, s.train_seconds, 10, s.batch, s.seq_len, save)
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        result["notes"].append(f"PyTorch peer failed training {cell}: {error_tail(exc)}")
        return None


def seqapp_worker(s: Settings, cell: str, generate: dict[str, int]) -> dict:
    """seqapp's figures for one cell from a fresh process (``bench/seqapp_worker.py``)."""
    steps = ",".join(f"{name.split('_')[1]}:{count}" for name, count in generate.items())
    command = [sys.executable, "-m", "bench.seqapp_worker", "--data", str(s.data), "--cell", cell,
               "--units", str(s.units), "--seconds", str(s.train_seconds), "--batch", str(s.batch),
               "--seq-len", str(s.seq_len), "--generate", steps]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=s.train_seconds + 1800)
    if done.returncode != 0:
        raise RuntimeError(f"the seqapp side of {cell} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(s: Settings, result: dict, tmp: Path) -> Path | None:
    """Training tokens/s and validation loss of each cell on both sides, and seqapp's generation speed
    with the trained LSTM; return the peer's saved LSTM (or None)."""
    peer_model = None
    gflops = result["machine"].get("sgemm_gflops")
    for cell in s.cells:
        key = report.cell_key(cell, s.units)
        save = tmp / "peer_lstm.pt" if cell == "lstm" else None
        peer = peer_training(s, cell, save, result)
        if peer is not None:
            peer_model = save or peer_model
            result["machine"]["torch"] = peer.get("torch")
        ours = seqapp_worker(s, cell, s.gen_steps if cell == "lstm" else {})
        for name, speed in ours.pop("generation").items():
            put(result, "generate_chars_per_s", "seqapp", name, speed["chars_per_s"])
            put(result, "generate_first_call_s", "seqapp", name, speed["first_call_s"])
        for side, figures in (("seqapp", ours), ("torch", peer or {})):
            tokens = figures.get("train_tokens_per_s")
            put(result, "train_tokens_per_s", side, key, tokens)
            pct = percent_of_bound(tokens, result["flops_per_token"][key], gflops)
            put(result, "train_pct_of_sgemm", side, key, pct)
            put(result, "val_loss", side, key, figures.get("val_loss_nats_per_char"))
        result["details"].setdefault("train", {})[key] = {"seqapp": ours, "torch": peer}
    return peer_model


def peer_generation(s: Settings, result: dict, peer_model: Path | None) -> None:
    """The peer's steady-state generation speed at the same batch sizes, with its LSTM trained above."""
    if s.torch_python is None or peer_model is None or not peer_model.exists():
        return
    batches = [int(name.split("_")[1]) for name in s.gen_steps]
    try:
        speeds = peers.peer_generation(s.torch_python, peer_model, batches, list(s.gen_steps.values()))
    except (subprocess.SubprocessError, OSError, ValueError) as exc:
        result["notes"].append(f"PyTorch peer generation failed: {error_tail(exc)}")
        return
    for name, speed in speeds.items():
        put(result, "generate_chars_per_s", "torch", name, speed["chars_per_s"])
        put(result, "generate_first_call_s", "torch", name, speed["first_call_s"])


def latency_commands(s: Settings, seqapp: list[str], out: Path, runs: dict[str, Path], inputs: dict[str, Path],
                     peer_model: Path | None) -> dict[str, list[str]]:
    """The commands to time, named ``<command>.<variant>`` (variants: default, tf, torch)."""
    generate_variants = ["default"] + (["tf"] if latency.lists_option([*seqapp, "generate"], "--engine") else [])
    predict_tf = s.predict_tf and latency.lists_option([*seqapp, "predict"], "--engine")
    base = {"generate": [*seqapp, "generate", "--seed", "hello", "--length", "300", "--out", str(out)],
            "predict_sentiment": [*seqapp, "predict", "great", "--run", str(runs["sentiment"])],
            "predict_translate": [*seqapp, "predict", "I am cold.", "--run", str(runs["translate"])],
            "predict_sentiment_10k": [*seqapp, "predict", "--file", str(inputs["sentiment"]),
                                      "--run", str(runs["sentiment"])],
            "predict_translate_1k": [*seqapp, "predict", "--file", str(inputs["translate"]),
                                     "--run", str(runs["translate"])]}
    commands = {}
    for name, command in base.items():
        variants = generate_variants if name == "generate" else ["default"] + (["tf"] if predict_tf else [])
        for variant in variants:
            commands[f"{name}.{variant}"] = command + ([] if variant == "default" else ["--engine", variant])
    script = peers.peer_script("torch_generate.py")
    if s.torch_python and script and peer_model and peer_model.exists():
        commands["generate.torch"] = [s.torch_python, str(script), "--model", str(peer_model), "--seed", "hello",
                                      "--length", "300"]
    return commands


def repeats(s: Settings, name: str) -> int:
    """How many times to time command ``<command>.<variant>``."""
    command, variant = name.split(".")
    if command in MANY:
        return s.many_reps
    return s.tf_reps if variant == "tf" else s.reps


def command_latency(s: Settings, result: dict, tmp: Path, peer_model: Path | None) -> None:
    """Train the small runs, then time each command in fresh processes."""
    seqapp, out = latency.seqapp_command(), tmp / "runs"
    corpus = s.data if s.data.is_file() else None
    runs, setup_s = fixtures.train_runs(fixtures.train_commands(seqapp, out, s.quick, corpus), out)
    inputs = fixtures.write_inputs(tmp, s.sentiment_lines, s.translate_lines)
    commands = latency_commands(s, seqapp, out, runs, inputs, peer_model)
    reps = {name: repeats(s, name) for name in commands}
    measured = latency.measure(commands, reps)
    for name, figures in measured.items():
        command, variant = name.split(".")
        if "error" in figures:
            result["notes"].append(f"{name} failed: {figures['error']}")
            continue
        result["latency_s"][command][variant] = figures["median_s"]
        result["peak_rss_kb"][command][variant] = figures["peak_rss_kb"]
    result["details"]["latency"] = {"seqapp": seqapp, "setup_s": round(setup_s, 1),
                                    "commands": {name: " ".join(cmd) for name, cmd in commands.items()},
                                    "measured": measured}


def fast_rnn_speedup(s: Settings, result: dict) -> None:
    """Training tokens/s of the word-level tasks' templates (masked sequences) with Keras's own
    recurrent loop and with seqapp's fast one, in turns in one process of its own
    (``bench/fastrnn_speed.py --tasks``); a missing data set leaves ``null`` and a note."""
    command = [sys.executable, "-m", "bench.fastrnn_speed", "--tasks", ",".join(report.SPEEDUP_TASKS),
               "--seconds", str(s.speedup_seconds), "--rounds", str(s.speedup_rounds), "--json"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3600, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        result["notes"].append(f"fast_rnn_speedup failed: {error_tail(exc)}")
        return
    result["fast_rnn_speedup"].update(measured["fast_rnn_speedup"])
    result["notes"].extend(measured["notes"])


def quality(s: Settings, result: dict) -> None:
    """Validation loss against training time, the default textgen template beside the peer,
    with its plot (``bench/results/time_to_quality.png``)."""
    try:
        curves = time_to_quality.compare(s.torch_python, s.data, s.quality_seconds, [])
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
        result["notes"].append(f"time to quality failed: {error_tail(exc)}")
        return
    result["time_to_quality"] = curves
    time_to_quality.RESULTS.mkdir(parents=True, exist_ok=True)
    time_to_quality.plot(curves, time_to_quality.RESULTS / "time_to_quality.png")


def task_quality(result: dict) -> None:
    """Each task's headline metric on real data (``bench/quality.py``), in a process of its own."""
    command = [sys.executable, "-m", "bench.quality", "--json"]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=3 * 3600, check=True)
        measured = json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError) as exc:
        result["notes"].append(f"task quality failed: {error_tail(exc)}")
        return
    result["quality"] = {task: figures for task, figures in measured["quality"].items() if figures is not None}
    result["notes"].extend(measured["notes"])


def missing_notes(s: Settings, result: dict) -> None:
    """Notes for what this run does not measure and why."""
    notes = result["notes"]
    if s.torch_python is None and not s.notes:
        notes.append("PyTorch peer: no Python with torch found (give --torch-python): peer figures are n/a")
    elif peers.peer_script("torch_charlm.py") is None:
        notes.append("PyTorch peer scripts not found (set SEQAPP_SHARED): peer figures are n/a")
    if not s.data.is_file():
        notes.append(f"Tiny Shakespeare not found at {s.data}: training and generation figures are n/a")
    skipped = [c for c in report.CELLS if c not in s.cells]
    if skipped:
        notes.append(f"--quick: {', '.join(skipped)} not trained; {s.train_seconds:.0f} s of training; latency: "
                     f"medians of {s.reps} runs, one run of `--engine tf` and of the many-input calls, "
                     "`predict --engine tf` not timed")
    unmeasured = [f"{command}.{variant}" for command, variants in report.LATENCY.items() for variant in variants
                  if result["latency_s"][command][variant] is None]
    if unmeasured:
        notes.append(f"latency not measured in this run: {', '.join(unmeasured)}")


def timed(sections: dict, name: str, started: float) -> float:
    """Record the seconds since ``started`` as section ``name``; return the time now."""
    now = time.perf_counter()
    sections[name] = round(now - started, 1)
    return now


def run_suite(s: Settings) -> dict:
    """Run every section and return the finished result (not yet written)."""
    started = clock = time.perf_counter()
    result, sections = report.empty_result(s.units, s.embed), {}
    result["notes"].extend(s.notes)
    result.update(quick=s.quick, started_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    settings = {key: value for key, value in asdict(s).items() if key != "notes"}
    result["settings"] = {**settings, "data": str(s.data), "latency_labels": LABELS}
    result["machine"] = {**machine_info(), "torch": None, "loadavg_start": load_average()}
    clock = timed(sections, "machine", clock)
    peer_model = None
    with tempfile.TemporaryDirectory(prefix="seqapp-bench-") as folder:
        tmp = Path(folder)
        if s.data.is_file():
            peer_model = throughput(s, result, tmp)
            peer_generation(s, result, peer_model)
            clock = timed(sections, "training_and_generation", clock)
        if s.speedup_seconds:
            fast_rnn_speedup(s, result)
            clock = timed(sections, "fast_rnn_speedup", clock)
        if s.data.is_file() and s.quality_seconds:
            quality(s, result)
            clock = timed(sections, "time_to_quality", clock)
        if not s.quick:
            task_quality(result)
            clock = timed(sections, "task_quality", clock)
        command_latency(s, result, tmp, peer_model)
        timed(sections, "latency", clock)
    missing_notes(s, result)
    result["machine"]["loadavg_end"] = load_average()
    busy = busy_note(result["machine"])
    if busy:
        result["notes"].append(busy)
    result["details"]["sections_s"] = sections
    result["wall_s"] = round(time.perf_counter() - started, 1)
    return report.add_ratios(result)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages (another job on a shared machine shows here)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def busy_note(machine: dict) -> str | None:
    """A warning when other work kept over half the cores busy as the run started, else None."""
    load, cores = (machine.get("loadavg_start") or [0.0])[0], machine.get("cores_usable") or machine.get("cores") or 1
    if load <= cores / 2:
        return None
    return (f"the machine was busy as the run started (load average {load:.2f} on {cores} cores): every figure is "
            "lower than on an idle machine, the PyTorch peer's most of all (its threads wait for each other)")
