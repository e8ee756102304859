"""``python -m bench [--quick] [--torch-python PATH]``: run the suite, write bench/results/latest.{json,md}.

The full run trains LSTM, GRU and SimpleRNN (256 units) for 60 s each on each side, samples
20,000 characters at batch 1, trains the sentiment, tagging and translate templates with
Keras's recurrent loop and with the fast one in 15 s turns, and times each command 5 times
(about 25 minutes on 2 CPU cores); ``--quick`` trains the LSTM only for 10 s, samples less,
skips the templates' fast-loop turns and the task quality (keeping the last full run's figures)
and times each command 3 times (``--engine tf`` and the many-input calls once): about 2 minutes
on 2 cores. Nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench import RESULTS, report, shared_dir
from bench.peers import can_import_torch, find_torch_python
from bench.suite import Settings, run_suite


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the short run (CI): LSTM only, 10 s budgets")
    parser.add_argument("--torch-python", help="a Python with torch for the peer (default: found automatically)")
    parser.add_argument("--data", type=Path, default=shared_dir() / "data" / "tinyshakespeare" / "input.txt",
                        help="the character corpus for training throughput (Tiny Shakespeare)")
    parser.add_argument("--seconds", type=float, help="training budget per model (default 60, --quick 10)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for latest.json and latest.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write its results; print the markdown table."""
    args = parse_args(argv)
    start = time.perf_counter()
    torch_python, notes = args.torch_python or find_torch_python(), []
    if args.torch_python and not can_import_torch(args.torch_python):
        torch_python = None
        notes.append(f"PyTorch peer: --torch-python {args.torch_python} cannot import torch: peer figures are n/a")
    settings = Settings.for_mode(args.quick, torch_python, args.data)
    settings.notes = notes
    if args.seconds:
        settings.train_seconds = args.seconds
    result = run_suite(settings)
    json_path, md_path = report.write(result, args.out)
    print(md_path.read_text(encoding="utf-8"))
    print(f"wrote {json_path} and {md_path} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
