#!/usr/bin/env python3
"""Benchmark: seqapp's character language model beside the plain-PyTorch peer.

Both train the same network (Embedding 64 -> one LSTM/GRU layer -> Dense over the
characters) on Tiny Shakespeare for the same wall-clock budget, then generate text one
character at a time at batch 1 with the state carried. The peer runs in its own Python
(seqapp does not depend on torch), in the same benchmark run, alternating with seqapp.
The script prints a table and the seqapp/peer ratios; it never asserts a speed.

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0
    python bench/textgen_vs_torch.py --torch-python /tmp/torchvenv/bin/python --seconds 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def time_budget(seconds: float):
    """A Keras callback that stops training after ``seconds`` (after one warm-up step) and counts steps."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        """Stop after ``seconds`` of training (after one warm-up step) and count the steps."""

        def __init__(self) -> None:
            super().__init__()
            self.start, self.steps = None, 0

        def on_train_batch_end(self, batch_index, logs=None):
            if self.start is None:
                self.start = time.perf_counter()  # the first step traces and compiles
                return
            self.steps += 1
            if time.perf_counter() - self.start >= seconds:
                self.model.stop_training = True

    return TimeBudget()


def seqapp_side(data: Path, cell: str, units: int, seconds: float, gen_chars: int, batch: int, seq_len: int) -> dict:
    """Train seqapp's textgen model for ``seconds``, then time stateful generation."""
    from seqapp import backend

    backend.start()
    import keras

    from seqapp.runs import Run
    from seqapp.tasks import load_config
    from seqapp.tasks.textgen import generate_tokens, mean_cross_entropy, step_function, windows
    from seqapp.text import Tokenizer
    from seqapp.training import prepare

    cfg = load_config("textgen", [f"model.cell={cell}", f"model.units={units}", "model.embedding_dim=64",
                                  f"data.seq_len={seq_len}", f"train.batch_size={batch}", "train.learning_rate=0.002",
                                  "data.val_fraction=0.1", "data.test_fraction=0.0"], {"data.path": str(data)})
    ready = prepare(cfg)
    model, splits, prep = ready.model, ready.splits, ready.preprocessing
    tokenizer = Tokenizer.from_dict(prep["tokenizer"])
    dataset = ready.train_ds.repeat()
    tokens_per_batch = batch * seq_len
    budget = time_budget(seconds)
    if cfg.train.jit_compile is not None:
        model.jit_compile = cfg.train.jit_compile  # as training.fit does
    model.fit(dataset, steps_per_epoch=10_000_000, epochs=1, callbacks=[budget], verbose=0, shuffle=False)
    train_s = time.perf_counter() - budget.start
    val_x, val_y = windows(tokenizer.encode_array(splits.val), seq_len, seq_len)
    val_loss = mean_cross_entropy(model, val_x, val_y)
    run = Run(path=ROOT, config=cfg, preprocessing=prep, _model=model)
    step = step_function(run)
    list(generate_tokens(run, "\n", length=5, step=step))  # warm-up trace
    start = time.perf_counter()
    for _ in generate_tokens(run, "\n", length=gen_chars, step=step, random_seed=0):
        pass
    gen_s = time.perf_counter() - start
    return {"peer": "seqapp", "keras": keras.__version__,
            "train_tokens_per_s": round(budget.steps * tokens_per_batch / train_s, 1),
            "val_loss_nats_per_char": round(val_loss, 4), "generate_chars_per_s_batch1": round(gen_chars / gen_s, 1)}


def torch_side(python: str, data: Path, cell: str, units: int, seconds: float, gen_chars: int, batch: int,
               seq_len: int) -> dict:
    """Run the PyTorch peer script in its own interpreter and read its JSON line."""
    peer = SHARED / "peers" / "torch_charlm.py"
    command = [python, str(peer), "--data", str(data), "--cell", {"simplernn": "rnn"}.get(cell, cell),
               "--units", str(units), "--seconds", str(seconds), "--gen-chars", str(gen_chars),
               "--batch", str(batch), "--seq-len", str(seq_len)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch-python", required=True, help="a Python that has torch installed")
    parser.add_argument("--data", type=Path, default=SHARED / "data" / "tinyshakespeare" / "input.txt")
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
