#!/usr/bin/env python3
"""Benchmark: training speed of the stock Keras recurrent loop beside seqapp's fast one.

Two copies of a model are built with the same weights, one left stock and one given
:func:`seqapp.fastrnn.accelerate`; they then train in turns of ``--seconds`` each (after
warm-up steps that trace and compile), ``--rounds`` turns each, in this one process so
that both see the same load on a shared machine. Prints tokens/s and the fast/stock ratio;
it never asserts a speed.

* ``--cells``: the textgen model (Embedding 64 -> LSTM/GRU -> Dense over the characters) on
  Tiny Shakespeare, per cell and XLA setting; tokens are characters.
* ``--tasks``: the word-level tasks, whose embeddings mask the padding, each with its real
  template's model and batch on its real data set (``../shared/data``): ``sentiment``
  (amazon + imdb), ``tagging`` (UD English EWT dev) and ``translate`` (``translate-fra-eng``
  on fra-eng.tsv). Both copies train on the same batches (one epoch of the template's own
  pipeline, the batches of each shape first so that the warm-up steps trace them all), and
  tokens are the input tokens that are not padding (translate: source and target). An
  untimed turn of each side comes first; then every turn trains the steps Keras's loop took
  in ``--seconds`` of its warm-up turn, the same batches on both sides, whose lengths vary.
  ``python -m bench`` records these as ``fast_rnn_speedup.<task>``.

    PYTHONPATH=. python bench/fastrnn_speed.py --seconds 20 --rounds 2 --cells lstm,gru --jit true,false
    python -m bench.fastrnn_speed --tasks sentiment,tagging,translate --seconds 15 --rounds 2 [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
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


def timed_fit(model: Any, dataset: Any, seconds: float, warm_up: int = 1,
              steps: int | None = None) -> tuple[int, float]:
    """Train on ``dataset`` (endless, from its start) for about ``seconds``, or for ``steps`` steps,
    after ``warm_up`` steps; return the steps after the warm-up and the time they took."""
    budget = time_budget(seconds, warm_up, steps)
    model.fit(dataset, steps_per_epoch=10_000_000, epochs=1, callbacks=[budget], verbose=0, shuffle=False)
    return budget.steps, time.perf_counter() - budget.start


def time_budget(seconds: float, warm_up: int, steps: int | None = None) -> Any:
    """A Keras callback that stops training ``seconds`` (or ``steps`` steps) after ``warm_up`` steps
    and counts the steps since."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.start, self.steps, self.seen = None, 0, 0

        def on_train_batch_end(self, batch_index: int, logs: dict | None = None) -> None:
            self.seen += 1
            if self.start is None:
                if self.seen >= warm_up:  # the first steps trace and compile
                    self.start = time.perf_counter()
                return
            self.steps += 1
            if (self.steps >= steps) if steps else (time.perf_counter() - self.start >= seconds):
                self.model.stop_training = True

    return TimeBudget()


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


# -- the word-level tasks: masked sequences ----------------------------------------------

TASKS = ("sentiment", "tagging", "translate")


def task_data(data: Path) -> dict[str, tuple[str, dict[str, str], Path]]:
    """``task -> (template, data settings, the file or folder that must exist)`` under ``data``."""
    tagging = data / "tagging"
    return {
        "sentiment": ("sentiment", {"data.path": str(data / "sentiment")}, data / "sentiment"),
        "tagging": ("tagging", {"data.path": str(tagging / "en_ewt-ud-dev.conllu"),
                                "data.test_path": str(tagging / "en_ewt-ud-test.conllu")},
                    tagging / "en_ewt-ud-dev.conllu"),
        "translate": ("translate-fra-eng", {"data.path": str(data / "translation" / "fra-eng.tsv")},
                      data / "translation" / "fra-eng.tsv"),
    }


def task_model(template: str, values: dict, fast: bool) -> tuple[Any, Any, Any]:
    """The template's compiled model (``fast``: accelerated), its config and its training pipeline."""
    from seqapp import fastrnn
    from seqapp.tasks import load_config
    from seqapp.training import prepare, set_jit_compile

    cfg = load_config(template, [], values)
    cfg.train.fast_rnn = False  # this benchmark chooses itself
    ready = prepare(cfg)  # seeded: both copies start from the same weights
    fastrnn.keep_freed_memory()  # as training does with train.keep_freed_memory (process-wide: both sides)
    if fast and not fastrnn.accelerate(ready.model):
        raise RuntimeError(f"{template}: no recurrent layer takes the fast loop")
    set_jit_compile(ready.model, cfg.train.jit_compile)  # as training.fit does
    return ready.model, cfg, ready.train_ds


def input_tokens(inputs: Any) -> int:
    """The tokens of a batch's inputs that are not padding (id 0): every integer (batch, time) input."""
    import numpy as np
    import tensorflow as tf

    return sum(int(np.count_nonzero(tensor)) for tensor in tf.nest.flatten(inputs)
               if tensor.shape.rank == 2 and tensor.dtype.is_integer)


def fixed_batches(dataset: Any) -> tuple[Any, list[int], int]:
    """One epoch of ``dataset`` as an endless pipeline both copies train on: the batches of each shape
    first, then the others in their order. Returns it, the tokens of each batch in that order and
    how many steps trace every shape (the warm-up)."""
    import tensorflow as tf

    firsts, rest, shapes = [], [], set()
    for batch in dataset:
        shape = tuple(tuple(tensor.shape) for tensor in tf.nest.flatten(batch))
        (rest if shape in shapes else firsts).append(batch)
        shapes.add(shape)
    ordered = firsts + rest
    pipeline = tf.data.Dataset.from_generator(lambda: iter(ordered), output_signature=dataset.element_spec).cache()
    for _ in pipeline:  # fill the cache: later passes read memory
        pass
    options = tf.data.Options()
    options.autotune.enabled = False  # no autotuning thread, whose teardown can stall a later turn
    # the first steps trace each shape; Keras retraces once more with the differing sizes relaxed
    return pipeline.repeat().with_options(options), [input_tokens(batch[0]) for batch in ordered], len(firsts) + 1


def compare_task(task: str, data: Path, seconds: float, rounds: int) -> dict:
    """Alternate stock and fast training of one task's template; tokens/s of each (median over rounds) and the ratio."""
    template, values, _ = task_data(data)[task]
    sides, batches = {}, None
    for fast in (False, True):
        model, cfg, train_ds = task_model(template, values, fast)
        if batches is None:
            batches = fixed_batches(train_ds)
        sides["fast" if fast else "stock"] = (model, [])
    pipeline, tokens, warm_up = batches
    gc.disable()  # no collection inside a timed turn; one between turns
    try:
        # A warm-up turn of each side (traces, first runs of each graph): the steps Keras's loop
        # takes in ``seconds`` are then the steps of every turn, the same batches on both sides.
        steps = None
        for turn in range(rounds + 1):
            for model, rates in sides.values():
                gc.collect()
                steps, took = timed_fit(model, pipeline, seconds, warm_up, steps)
                if turn:
                    rates.append(sum(tokens[(warm_up + step) % len(tokens)] for step in range(steps)) / took)
    finally:
        gc.enable()
    stock, fast = (statistics.median(sides[name][1]) for name in ("stock", "fast"))
    return {"template": template, "batch_size": cfg.train.batch_size, "jit_compile": bool(model.jit_compile),
            "stock_tokens_per_s": round(stock), "fast_tokens_per_s": round(fast), "ratio": round(fast / stock, 2),
            "rounds": rounds, "steps_per_turn": steps, "batches_per_epoch": len(tokens),
            "stock_all": [round(r) for r in sides["stock"][1]], "fast_all": [round(r) for r in sides["fast"][1]]}


def compare_tasks(tasks: list[str], data: Path, seconds: float, rounds: int,
                  log: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    """``{task: figures or None}`` for ``fast_rnn_speedup`` and notes for the tasks not measured."""
    figures, notes = dict.fromkeys(tasks), []
    for task in tasks:
        needed = task_data(data)[task][2]
        if not needed.exists():
            notes.append(f"fast_rnn_speedup.{task}: {needed} not found")
            continue
        figures[task] = compare_task(task, data, seconds, rounds)
        log(f"{task:10}{figures[task]['stock_tokens_per_s']:>14}{figures[task]['fast_tokens_per_s']:>14}"
            f"{figures[task]['ratio']:>8.2f}   {figures[task]['stock_all']} | {figures[task]['fast_all']}")
    return figures, notes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.fastrnn_speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt")
    parser.add_argument("--cells", default=None, help="textgen cells (default lstm,gru; none with --tasks)")
    parser.add_argument("--jit", default="true", help="comma-separated XLA settings to measure: true,false")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--tasks", default="", help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--task-data", type=Path, default=shared_dir() / "data",
                        help="the folder of the tasks' data sets (default ../shared/data)")
    parser.add_argument("--seconds", type=float, default=20, help="seconds per turn")
    parser.add_argument("--rounds", type=int, default=2, help="turns of each side")
    parser.add_argument("--json", action="store_true", help="(--tasks) print the figures as one JSON line")
    args = parser.parse_args(argv)
    args.tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    if any(task not in TASKS for task in args.tasks) or args.rounds < 1 or args.seconds <= 0:
        parser.error(f"--tasks takes {', '.join(TASKS)}; --rounds at least 1 and --seconds above 0")
    if args.cells is None:
        args.cells = "" if args.tasks else "lstm,gru"
    return args


def main(argv: list[str] | None = None) -> None:
    """The command line: compare each cell and XLA setting, then each task; print one line each."""
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from seqapp import backend

    backend.start()
    cells = [cell.strip() for cell in args.cells.split(",") if cell.strip()]
    if cells and not args.data.exists():
        print(f"skipped: {args.data} not found (the benchmark needs the shared Tiny Shakespeare file)")
        cells = []
    if cells:
        print(f"{'cell':6}{'xla':>6}{'stock tok/s':>14}{'fast tok/s':>14}{'ratio':>8}   per round (stock | fast)")
    for cell in cells:
        for jit in (value.strip().lower() == "true" for value in args.jit.split(",")):
            row = compare(args.data, cell, jit, args)
            print(f"{cell:6}{str(jit):>6}{row['stock_tokens_per_s']:>14}{row['fast_tokens_per_s']:>14}"
                  f"{row['ratio']:>8.2f}   {row['stock_all']} | {row['fast_all']}", flush=True)
    if not args.tasks:
        return
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.json else print
    log(f"{'task':10}{'stock tok/s':>14}{'fast tok/s':>14}{'ratio':>8}   per round (stock | fast)")
    figures, notes = compare_tasks(args.tasks, args.task_data, args.seconds, args.rounds, log)
    for note in notes:
        log(f"skipped: {note}")
    if args.json:
        print(json.dumps({"fast_rnn_speedup": figures, "notes": notes}), flush=True)
        os._exit(0)  # as bench/seqapp_worker.py: no wait on tf.data's threads at shutdown


if __name__ == "__main__":
    main()
