#!/usr/bin/env python3
"""Benchmark: seqapp's character language model beside the plain-PyTorch peer.

Both train the same network (Embedding 64 -> one LSTM/GRU layer -> Dense over the
characters) on Tiny Shakespeare for the same wall-clock budget, then generate text one
character at a time at batch 1 with the state carried. The peer runs in its own Python
(seqapp does not depend on torch), in the same benchmark run, alternating with seqapp.
The script prints a table and the seqapp/peer ratios; it never asserts a speed. Its
pieces (:func:`train_seqapp`, :func:`generation_speed`, :func:`torch_side`) are also
used by the suite, ``python -m bench``.

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0
    python bench/textgen_vs_torch.py --torch-python /tmp/torchvenv/bin/python --seconds 60
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import ROOT, shared_dir  # noqa: E402

PEER_CELLS = {"simplernn": "rnn"}  # seqapp's cell name -> the peer's --cell


def time_budget(seconds: float) -> Any:
    """A Keras callback that stops training after ``seconds`` (after one warm-up step) and counts steps."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Stop after ``seconds`` of training (after one warm-up step) and count the steps."""

        def __init__(self) -> None:
            super().__init__()
            self.start, self.steps = None, 0

        def on_train_batch_end(self, batch_index: int, logs: dict | None = None) -> None:
            if self.start is None:
                self.start = time.perf_counter()  # the first step traces and compiles
                return
            self.steps += 1
            if time.perf_counter() - self.start >= seconds:
                self.model.stop_training = True

    return TimeBudget()


def seqapp_config(data: Path, cell: str, units: int, batch: int, seq_len: int) -> Any:
    """The ``textgen`` template with the peer's network and optimiser settings and a 90/10 split."""
    from seqapp.tasks import load_config

    return load_config("textgen", [f"model.cell={cell}", f"model.units={units}", "model.embedding_dim=64",
                                   f"data.seq_len={seq_len}", f"train.batch_size={batch}",
                                   "train.learning_rate=0.002", "data.val_fraction=0.1", "data.test_fraction=0.0"],
                       {"data.path": str(data)})


def train_seqapp(data: Path, cell: str, units: int, seconds: float, batch: int, seq_len: int) -> tuple[dict, Any]:
    """Train seqapp's textgen model for ``seconds`` after a warm-up step; return its figures and the Run."""
    from seqapp import backend

    backend.start()
    from seqapp.runs import Run
    from seqapp.tasks.textgen import mean_cross_entropy, windows
    from seqapp.text import Tokenizer
    from seqapp.training import prepare, set_jit_compile

    cfg = seqapp_config(data, cell, units, batch, seq_len)
    ready = prepare(cfg)
    model, prep = ready.model, ready.preprocessing
    budget = time_budget(seconds)
    set_jit_compile(model, cfg.train.jit_compile)  # as training.fit does
    fit_start = time.perf_counter()
    model.fit(ready.train_ds.repeat(), steps_per_epoch=10_000_000, epochs=1, callbacks=[budget], verbose=0,
              shuffle=False)
    train_s = time.perf_counter() - budget.start
    val_x, val_y = windows(Tokenizer.from_dict(prep["tokenizer"]).encode_array(ready.splits.val), seq_len, seq_len)
    figures = {"train_tokens_per_s": round(budget.steps * batch * seq_len / train_s, 1),
               "train_seconds": round(train_s, 1), "first_step_s": round(budget.start - fit_start, 2),
               "val_loss_nats_per_char": round(mean_cross_entropy(model, val_x, val_y), 4)}
    return figures, Run(path=ROOT, config=cfg, preprocessing=prep, _model=model)


def generation_speed(run: Any, batch: int, steps: int, seed: str = "\n", engine: str = "tf") -> dict:
    """Steady-state characters/s of stateful sampling at ``batch``, first call apart.

    ``generate_tokens`` samples ``CHUNK`` steps per call (``tf``: one XLA-compiled call;
    ``litert``: the run's LiteRT step graph driven from numpy); the first call (seed pass,
    tracing and compiling on ``tf``, first chunk) is timed to the first token, the rest is steady.
    """
    from seqapp.tasks.textgen import CHUNK, generate_tokens, step_function

    steps = max(steps, 2 * CHUNK)
    step = step_function(run, engine)
    start, first = time.perf_counter(), None
    for _ in generate_tokens(run, seed, length=steps, num_samples=batch, random_seed=0, step=step):
        first = first or time.perf_counter()
    end = time.perf_counter()
    return {"batch": batch, "steps": steps, "first_call_s": round(first - start, 3),
            "chars_per_s": round((steps - CHUNK) * batch / (end - first), 1)}


def seqapp_side(data: Path, cell: str, units: int, seconds: float, gen_chars: int, batch: int, seq_len: int) -> dict:
    """Train seqapp's textgen model for ``seconds``, then time stateful generation at batch 1."""
    import keras

    figures, run = train_seqapp(data, cell, units, seconds, batch, seq_len)
    gc.disable()  # the iterator left mid-epoch must not be torn down inside the timed loop (seqapp_worker.py)
    speed = generation_speed(run, 1, gen_chars)
    gc.enable()
    return {"peer": "seqapp", "keras": keras.__version__, **figures,
            "generate_chars_per_s_batch1": speed["chars_per_s"]}


def torch_side(python: str, data: Path, cell: str, units: int, seconds: float, gen_chars: int, batch: int,
               seq_len: int, save: Path | None = None) -> dict:
    """Run the PyTorch peer script in its own interpreter and read its JSON line (``save``: keep the model)."""
    peer = shared_dir() / "peers" / "torch_charlm.py"
    command = [python, str(peer), "--data", str(data), "--cell", PEER_CELLS.get(cell, cell),
               "--units", str(units), "--seconds", str(seconds), "--gen-chars", str(gen_chars),
               "--batch", str(batch), "--seq-len", str(seq_len)]
    if save is not None:
        command += ["--save", str(save)]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """The command line: train and compare each cell, print the table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", required=True, help="a Python that has torch installed")
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--gen-chars", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if not args.data.exists():
        sys.exit(f"{args.data} not found: the benchmark needs the shared Tiny Shakespeare file")
    rows = []
    for cell in args.cells.split(","):
        common = (args.data, cell, args.units, args.seconds, args.gen_chars, args.batch, args.seq_len)
        peer = torch_side(args.torch_python, *common)
        ours = seqapp_side(*common)
        rows.append({"cell": cell, "seqapp": ours, "pytorch": peer})
        print(f"\n{cell.upper()}({args.units}), batch {args.batch} x {args.seq_len}, "
              f"{args.seconds:.0f} s of training each")
        print(f"{'':32}{'seqapp':>12}{'pytorch':>12}{'ratio':>8}")
        for key in ("train_tokens_per_s", "generate_chars_per_s_batch1", "val_loss_nats_per_char"):
            print(f"{key:32}{ours[key]:>12}{peer[key]:>12}{ours[key] / peer[key]:>8.2f}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
