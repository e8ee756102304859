"""Benchmark of the translate task on Tatoeba English -> French (../shared/data/translation/fra-eng.tsv).

Trains each configuration with the same flow as ``seqapp train`` (template
``tasks/translate-fra-eng.yaml`` plus overrides; 80/10/10 split by distinct English
sentence after a seeded shuffle), times training and evaluation separately, and prints
a Markdown table of BLEU / chrF (multi- and single-reference) for greedy and beam
decoding beside the copy-the-source baseline. It never asserts anything about speed.

    python bench/translate_fra_eng.py                       # attention none vs bahdanau
    python bench/translate_fra_eng.py --config luong=model.attention=luong --epochs 10
    python bench/translate_fra_eng.py --minutes 8 --config word= \
        --config subword=data.level=subword,data.vocab_size=2000   # the same wall-clock budget each

``--minutes M`` ends each training at the first batch end after M minutes of it (the
partial epoch is validated and counts as an epoch; early stopping may end it sooner), and
the best validation epoch's weights are kept, as ``seqapp train`` keeps them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "translation" / "fra-eng.tsv"
DEFAULT_CONFIGS = ["no-attention=model.attention=none", "bahdanau=model.attention=bahdanau"]


def parse_config(text: str) -> tuple[str, list[str]]:
    """``label=section.key=value,section.key=value`` -> (label, overrides)."""
    label, _, overrides = text.partition("=")
    return label, [item for item in overrides.split(",") if item]


def time_budget(minutes: float) -> object:
    """A Keras callback that stops training at the first batch end after ``minutes`` of training."""
    import keras

    class TimeBudget(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.stopped = False

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.deadline = time.perf_counter() + minutes * 60

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if time.perf_counter() >= self.deadline:
                self.stopped = self.model.stop_training = True

    return TimeBudget()


def run_config(label: str, overrides: list[str], data: Path, epochs: int | None, beam: int,
               minutes: float | None = None) -> dict:
    """Train and evaluate one configuration (within ``minutes`` of training, if given); return its figures."""
    from seqapp import training
    from seqapp.runs import Run
    from seqapp.tasks import load_config

    values = {"data.path": str(data), "model.beam": beam}
    if epochs is not None:
        values["train.epochs"] = epochs
    cfg = load_config("translate-fra-eng", overrides, values)
    ready = training.prepare(cfg)
    model = ready.model
    with tempfile.TemporaryDirectory() as folder:
        budget = [time_budget(minutes)] if minutes else []
        start, cpu_start = time.perf_counter(), time.process_time()
        history = training.fit(model, ready.train_ds, ready.val_ds, cfg.train, Path(folder), verbose=2,
                               callbacks=budget)
        train_seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        run = Run(path=Path(folder), config=cfg, preprocessing=ready.preprocessing, _model=model)
        start = time.perf_counter()
        metrics = ready.task.evaluate(run, ready.splits)
        eval_seconds = time.perf_counter() - start
    losses = history.get("val_loss", history["loss"])
    return {"label": label, "overrides": overrides, "params": model.count_params(),
            "epochs": len(history["loss"]), "best_val_loss": round(min(losses), 4),
            "best_epoch": losses.index(min(losses)) + 1, "minutes": minutes,
            "stopped_by_time": bool(budget and budget[0].stopped),
            "train_seconds": round(train_seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
            "eval_seconds": round(eval_seconds, 1), "metrics": metrics}


def table(rows: list[dict]) -> list[str]:
    """Markdown table: one line per configuration and decoding."""
    lines = ["| config | decoding | BLEU | chrF | BLEU 1-ref | chrF 1-ref | epochs | train time | params |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        metrics = row["metrics"]
        decodings = {"greedy": metrics["greedy"], f"beam {metrics['beam']['width']}": metrics["beam"]}
        for name, scores in decodings.items():
            lines.append(f"| {row['label']} | {name} | {scores['bleu']:.2f} | {scores['chrf']:.2f} | "
                         f"{scores['bleu_1ref']:.2f} | {scores['chrf_1ref']:.2f} | {row['epochs']} | "
                         f"{row['train_seconds'] / 60:.1f} min | {row['params']:,} |")
    base = rows[0]["metrics"]["baseline_copy_source"]
    lines.append(f"| copy source | - | {base['bleu']:.2f} | {base['chrf']:.2f} | {base['bleu_1ref']:.2f} | "
                 f"{base['chrf_1ref']:.2f} | - | - | - |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the fra-eng TSV file")
    parser.add_argument("--config", action="append", help="label=section.key=value,... (repeatable)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs of the template")
    parser.add_argument("--beam", type=int, default=5, help="beam width reported beside greedy")
    parser.add_argument("--minutes", type=float, default=None,
                        help="stop each training after this many minutes of wall-clock training (best epoch kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures to this JSON file")
    args = parser.parse_args()
    if not args.data.is_file():
        print(f"skipped: {args.data} not found (the shared data sets live beside the project)")
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from seqapp import backend

    backend.start()
    rows = []
    for text in args.config or DEFAULT_CONFIGS:
        label, overrides = parse_config(text)
        rows.append(run_config(label, overrides, args.data, args.epochs, args.beam, args.minutes))
        print(f"{label}: {json.dumps({k: v for k, v in rows[-1].items() if k != 'metrics'})}", flush=True)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"\nfra-eng ({args.data.name}), {os.cpu_count()} CPU cores; test split scored with sacrebleu\n")
    print("\n".join(table(rows)))
    print("\nexamples (last configuration):")
    for example in rows[-1]["metrics"]["examples"]:
        print(f"  {example['source']} -> {example['beam']}   (refs: {' | '.join(example['references'])})")


if __name__ == "__main__":
    main()
