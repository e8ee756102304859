"""One cell's seqapp side in a fresh process: train for a time budget, then time generation.

    python -m bench.seqapp_worker --data input.txt --cell lstm --seconds 10 --generate 1:2000,64:200

prints one JSON object (the training figures, plus ``generation`` per ``batch_<B>`` when
asked) and leaves at once. The suite runs it so that its own process never imports
TensorFlow, each cell starts clean, and two TensorFlow habits cannot touch the figures:

* training stops mid-epoch, so the tf.data iterator is left behind in a reference cycle;
  whenever the garbage collector frees it, its destructor waits for the autotuning thread's
  sleep (tens of seconds here). The collector is therefore off from the end of training, and
* at exit the same wait would hold up the interpreter's shutdown: the worker ends with
  ``os._exit`` once its output is flushed.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.textgen_vs_torch import generation_speed, train_seqapp


def parse_generate(text: str) -> dict[int, int]:
    """``"1:2000,64:200"`` -> ``{1: 2000, 64: 200}`` (batch size: steps)."""
    pairs = (item.split(":") for item in text.split(",") if item.strip())
    return {int(batch): int(steps) for batch, steps in pairs}


def measure(args: argparse.Namespace) -> dict:
    """Train one cell, then time generation at each requested batch size."""
    figures, run = train_seqapp(args.data, args.cell, args.units, args.seconds, args.batch, args.seq_len)
    gc.disable()  # see the module docstring: no iterator teardown inside a timed loop
    wanted = parse_generate(args.generate)
    generation = {f"batch_{batch}": generation_speed(run, batch, steps) for batch, steps in wanted.items()}
    if 1 in wanted:
        generation["batch_1_litert"] = litert_speed(run, wanted[1])
    return {**figures, "generation": generation}


def litert_speed(run: Any, steps: int) -> dict:
    """Batch-1 speed on the engine ``seqapp generate`` uses by default: the LiteRT step graph
    that training saves with a run, exported here into a temporary run folder."""
    from seqapp.tasks.textgen import export_step

    with tempfile.TemporaryDirectory(prefix="seqapp-bench-litert-") as folder:
        exported = dataclasses.replace(run, path=Path(folder), cache={})
        export_step(exported, Path(folder))
        return generation_speed(exported, 1, steps, engine="litert")


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, measure, print the JSON line and leave without the slow shutdown."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--generate", default="", help="batch:steps pairs, e.g. 1:2000,64:200 (none: no timing)")
    result = measure(parser.parse_args(argv))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
