#!/usr/bin/env python3
"""Benchmark: training speed of the stock Keras recurrent loop beside seqapp's fast one.

Two copies of the textgen model (Embedding 64 -> LSTM/GRU -> Dense over the characters)
are built on Tiny Shakespeare with the same weights, one left stock and one given
:func:`seqapp.fastrnn.accelerate`; they then train in turns of ``--seconds`` each (after
one warm-up step that traces and compiles), ``--rounds`` turns each, in this one process
so that both see the same load on a shared machine. Prints tokens/s and the fast/stock
ratio per cell and XLA setting; it never asserts a speed.

    PYTHONPATH=. python bench/fastrnn_speed.py --seconds 20 --rounds 2 --cells lstm,gru --jit true,false
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the bench package importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import shared_dir  # noqa: E402


def build(data: Path, cell: str, units: int, batch: int, seq_len: int, jit: bool, fast: bool) -> tuple[Any, Any]:
    """A compiled textgen model and its endless training dataset (``fast``: accelerated)."""
    from bench.textgen_vs_torch import seqapp_config
    from seqapp import fastrnn
    from seqapp.training import prepare, set_jit_compile

    cfg = seqapp_config(data, cell, units, batch, seq_len)
    cfg.train.fast_rnn = False  # this benchmark chooses itself
    ready = prepare(cfg)  # seeded: both copies start from the same weights
    fastrnn.keep_freed_memory()  # as training does with train.keep_freed_memory (process-wide: both sides)
    if fast:
        fastrnn.accelerate(ready.model)
    set_jit_compile(ready.model, jit)  # as training.fit does
    return ready.model, ready.train_ds.repeat()


def timed_fit(model: Any, dataset: Any, seconds: float) -> tuple[int, float]:
    """Train on ``dataset`` (endless) for about ``seconds``; return the steps and the time they took."""
    from bench.textgen_vs_torch import time_budget

    budget = time_budget(seconds)
    model.fit(dataset, steps_per_epoch=10_000_000, epochs=1, callbacks=[budget], verbose=0, shuffle=False)
    return budget.steps, time.perf_counter() - budget.start


def compare(data: Path, cell: str, jit: bool, args: argparse.Namespace) -> dict:
    """Alternate stock and fast training of one cell; tokens/s of each (median over rounds) and the ratio."""
    tokens = args.batch * args.seq_len
    sides = {}
    for fast in (False, True):
        model, dataset = build(data, cell, args.units, args.batch, args.seq_len, jit, fast)
        sides["fast" if fast else "stock"] = (model, dataset, [])
    for _ in range(args.rounds):
        for model, dataset, rates in sides.values():
            steps, took = timed_fit(model, dataset, args.seconds)
            rates.append(steps * tokens / took)
    stock, fast = (statistics.median(sides[name][2]) for name in ("stock", "fast"))
    return {"cell": cell, "jit": jit, "stock_tokens_per_s": round(stock), "fast_tokens_per_s": round(fast),
            "ratio": round(fast / stock, 2), "rounds": args.rounds,
            "stock_all": [round(r) for r in sides["stock"][2]], "fast_all": [round(r) for r in sides["fast"][2]]}


def main() -> None:
    """The command line: compare each cell and XLA setting, print one line each."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--jit", default="true", help="comma-separated XLA settings to measure: true,false")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20, help="seconds per turn")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each side")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} not found (the benchmark needs the shared Tiny Shakespeare file)")
        return
    from seqapp import backend

    backend.start()
    print(f"{'cell':6}{'xla':>6}{'stock tok/s':>14}{'fast tok/s':>14}{'ratio':>8}   per round (stock | fast)")
    for cell in args.cells.split(","):
        for jit in (value.strip().lower() == "true" for value in args.jit.split(",")):
            row = compare(args.data, cell, jit, args)
            print(f"{cell:6}{str(jit):>6}{row['stock_tokens_per_s']:>14}{row['fast_tokens_per_s']:>14}"
                  f"{row['ratio']:>8.2f}   {row['stock_all']} | {row['fast_all']}", flush=True)


if __name__ == "__main__":
    main()
