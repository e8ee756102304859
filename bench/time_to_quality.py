#!/usr/bin/env python3
"""Time to quality: validation loss against training time, seqapp beside the PyTorch peer.

seqapp trains its **default** ``textgen`` template (only the data and a 90/10 split, the
peer's, are set) and stops at each checkpoint of the training clock to measure the loss on
the validation text; the clock is paused while it does, and starts after the first step
(which traces and compiles), as the peer's starts after its warm-up step. The peer cannot
pause, so it is run once per budget with its own defaults (Adam 2e-3, batch 64); its
seeded runs follow one trajectory, so the points lie on one curve. Both evaluate the same
last 10 % of the text, in nats per character. Figures and a PNG go to ``bench/results/``.

    python bench/time_to_quality.py --torch-python /tmp/vtorch/bin/python [--seconds 120]
    python -m bench.time_to_quality --side seqapp --seconds 120   # seqapp's curve only (JSON)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, shared_dir  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def checkpoints(seconds: float) -> list[float]:
    """The training times at which the loss is measured: eighths, quarters, halves and the end."""
    return [round(seconds * part, 1) for part in (0.125, 0.25, 0.5, 0.75, 1.0)]


def seqapp_curve(data: Path, seconds: float, overrides: list[str]) -> dict:
    """Train the default template for ``seconds`` of training time; the validation loss at each checkpoint."""
    from seqapp import backend

    backend.start()
    import keras

    from seqapp.pipeline import data_epoch
    from seqapp.tasks import load_config
    from seqapp.tasks.textgen import mean_cross_entropy, windows
    from seqapp.text import Tokenizer
    from seqapp.training import prepare, set_jit_compile

    cfg = load_config("textgen", ["data.val_fraction=0.1", "data.test_fraction=0.0", *overrides],
                      {"data.path": str(data)})
    ready = prepare(cfg)
    set_jit_compile(ready.model, cfg.train.jit_compile)  # as training.fit does
    val_x, val_y = windows(Tokenizer.from_dict(ready.preprocessing["tokenizer"]).encode_array(ready.splits.val),
                           cfg.data.seq_len, cfg.data.seq_len)
    marks, points = checkpoints(seconds), []

    class Clock(keras.callbacks.Callback):
        """Training time after the first step, paused while the validation loss is measured."""

        def __init__(self) -> None:
            super().__init__()
            self.start: float | None = None
            self.paused = 0.0

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            data_epoch().assign(epoch)  # a new shuffle each epoch, as seqapp's training does

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            now = time.perf_counter()
            if self.start is None:
                self.start = now
                return
            if now - self.start - self.paused >= marks[len(points)]:
                points.append([round(now - self.start - self.paused, 1),
                               round(mean_cross_entropy(self.model, val_x, val_y), 4)])
                self.paused += time.perf_counter() - now
                self.model.stop_training = len(points) == len(marks)

    ready.model.fit(ready.train_ds, epochs=10_000, callbacks=[Clock()], verbose=0, shuffle=False)
    return {"settings": {"batch_size": cfg.train.batch_size, "learning_rate": cfg.train.learning_rate,
                         "lr_schedule": cfg.train.lr_schedule, "cell": cfg.model.cell, "units": cfg.model.units,
                         "seq_len": cfg.data.seq_len}, "points": points}


def peer_curve(python: str, data: Path, seconds: float) -> dict:
    """The peer's validation loss after each budget (one run per budget, its defaults otherwise)."""
    peer = shared_dir() / "peers" / "torch_charlm.py"
    points = []
    for budget in checkpoints(seconds)[1:]:  # the shortest budget is left out: start-up dominates it
        done = subprocess.run([python, str(peer), "--data", str(data), "--seconds", str(budget), "--gen-chars", "1"],
                              capture_output=True, text=True, check=True, timeout=budget + 1800)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        points.append([figures["train_seconds"], figures["val_loss_nats_per_char"]])
    return {"settings": {"batch_size": 64, "learning_rate": 0.002, "cell": "lstm", "units": 256, "seq_len": 100},
            "points": points}


def seqapp_side(data: Path, seconds: float, overrides: list[str]) -> dict:
    """seqapp's curve from a fresh process (the caller never imports TensorFlow)."""
    command = [sys.executable, "-m", "bench.time_to_quality", "--side", "seqapp", "--data", str(data),
               "--seconds", str(seconds), *[arg for item in overrides for arg in ("--set", item)]]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 1800)
    if done.returncode != 0:
        raise RuntimeError(f"seqapp's time-to-quality run failed: {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def plot(result: dict, path: Path) -> None:
    """Validation loss against training time, one line per side."""
    from seqapp.plots import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for side, label in (("seqapp", "seqapp (default textgen template)"), ("torch", "PyTorch peer")):
        points = result.get(side, {}).get("points") or []
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title(f"LSTM(256) on Tiny Shakespeare; {result['machine']}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def compare(torch_python: str | None, data: Path, seconds: float, overrides: list[str]) -> dict:
    """Both curves, alternating sides in one run, with the machine and load recorded."""
    from bench.machine import CPUINFO, parse_cpuinfo

    info = parse_cpuinfo(CPUINFO.read_text(encoding="utf-8", errors="replace") if CPUINFO.exists() else "")
    result: dict[str, Any] = {"seconds": seconds, "load_before": os.getloadavg()[0],
                              "machine": f"{info['cpu_model'] or 'CPU'}, {info['cores'] or os.cpu_count()} cores"}
    if torch_python:
        result["torch"] = peer_curve(torch_python, data, seconds)
    result["seqapp"] = seqapp_side(data, seconds, overrides)
    result["load_after"] = os.getloadavg()[0]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", help="a Python that has torch installed (else seqapp's curve only)")
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="a template override")
    parser.add_argument("--side", choices=("both", "seqapp"), default="both")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: the benchmark needs the shared Tiny Shakespeare file")
    if args.side == "seqapp":
        print(json.dumps(seqapp_curve(args.data, args.seconds, args.overrides)), flush=True)
        os._exit(0)  # see bench/seqapp_worker.py: no slow tf.data teardown at exit
    result = compare(args.torch_python, args.data, args.seconds, args.overrides)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "time_to_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    plot(result, RESULTS / "time_to_quality.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
