"""Each task's headline metric on real data, so the next change to shared code can be compared.

    python -m bench.quality                         # every task whose data set is present
    python -m bench.quality --tasks sentiment,sine  # some of them
    python -m bench.quality --seeds 5               # sentiment: seeds 0..4 (default 3)

Every task trains its own default template (the data path set, nothing else changed), the
same way ``seqapp train`` does, with fixed seeds, and reports the test split once:

==========  =====================================================  ========================================
task        data (``../shared/data``)                              figure
==========  =====================================================  ========================================
textgen     tinyshakespeare/input.txt                              validation nats/char after 120 s of training
sentiment   sentiment/ (amazon + imdb, stratified 80/10/10)        test accuracy, mean ± std of the seeds,
                                                                   beside bag-of-words logistic regressions
translate   translation/fra-eng.tsv (``translate-fra-eng``)        test BLEU / chrF, beam 5, all references
tagging     tagging/en_ewt-ud-dev.conllu, tested on ...-test       test accuracy, beside the most frequent tag
sine        timeseries/daily-min-temperatures.csv (series-lstm)    test MSE, beside the last value
==========  =====================================================  ========================================

The figures go to ``quality.<task>`` of ``bench/results/latest.json`` (the rest of the file
is kept) and to ``bench/results/quality.md``. A missing data set leaves ``null`` and a note.
Nothing is asserted; ``python -m bench`` (full) runs this too, in a process of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import RESULTS, shared_dir

TASKS = ("textgen", "sentiment", "translate", "tagging", "sine")
TEXTGEN_SECONDS = 120.0


def data_path(*parts: str) -> Path:
    """A path under the shared data folder."""
    return shared_dir().joinpath("data", *parts)


def train_template(template: str, values: dict, overrides: list[str] | None = None) -> tuple[dict, float]:
    """Train ``template`` as ``seqapp train`` does; its metrics and the wall seconds of the call."""
    from seqapp.tasks import load_config
    from seqapp.training import train

    cfg = load_config(template, overrides or [], values)
    with tempfile.TemporaryDirectory(prefix="seqapp-quality-") as out:
        start = time.perf_counter()
        run = train(cfg, Path(out), verbose=0, log=lambda message: None)
        return run.metrics, round(time.perf_counter() - start, 1)


def textgen(seeds: int) -> dict:
    """Validation loss of the default template after TEXTGEN_SECONDS of training (the clock of
    ``bench/time_to_quality.py``, the same figure the suite puts beside the peer's)."""
    from bench.time_to_quality import seqapp_curve

    data = data_path("tinyshakespeare", "input.txt")
    curve = seqapp_curve(data, TEXTGEN_SECONDS, [])
    seconds, loss = curve["points"][-1]
    return {"metric": "val_nats_per_char", "value": loss, "train_seconds": seconds, "data": data.name}


def sentiment(seeds: int) -> dict:
    """Mean ± std test accuracy of seeds 0..seeds-1, and the two bag-of-words baselines on the same split."""
    from bench.sentiment_vs_bow import bag_of_words
    from seqapp.tasks import load_config
    from seqapp.tasks.sentiment import Sentiment

    data = data_path("sentiment")
    splits = Sentiment().load_data(load_config("sentiment", [], {"data.path": str(data)}))
    runs = [train_template("sentiment", {"data.path": str(data), "train.random_seed": seed}) for seed in range(seeds)]
    accuracies = [metrics["test"]["accuracy"] for metrics, _ in runs]
    return {"metric": "test_accuracy", "value": round(statistics.mean(accuracies), 4),
            "std": round(statistics.stdev(accuracies), 4) if len(accuracies) > 1 else None,
            "seeds": accuracies, "train_seconds": [seconds for _, seconds in runs],
            "bow_1_2gram": round(bag_of_words(splits, (1, 2))["accuracy"], 4),
            "bow_1gram": round(bag_of_words(splits, (1, 1))["accuracy"], 4),
            "majority": runs[0][0]["baseline_majority"]["test"]["accuracy"], "data": "amazon + imdb"}


def translate(seeds: int) -> dict:
    """BLEU and chrF (beam, all references) of the ``translate-fra-eng`` template on its test split."""
    data = data_path("translation", "fra-eng.tsv")
    metrics, seconds = train_template("translate-fra-eng", {"data.path": str(data)})
    beam = metrics["beam"]
    return {"metric": "test_bleu_beam", "value": round(beam["bleu"], 2), "chrf": round(beam["chrf"], 2),
            "greedy_bleu": round(metrics["greedy"]["bleu"], 2), "beam_width": beam["width"],
            "copy_source_bleu": round(metrics["baseline_copy_source"]["bleu"], 2), "train_seconds": seconds,
            "data": data.name}


def tagging(seeds: int) -> dict:
    """Test accuracy of the ``tagging`` template trained on EWT dev, tested on EWT test."""
    folder = data_path("tagging")
    metrics, seconds = train_template("tagging", {"data.path": str(folder / "en_ewt-ud-dev.conllu"),
                                                  "data.test_path": str(folder / "en_ewt-ud-test.conllu")})
    return {"metric": "test_accuracy", "value": round(metrics["test"]["accuracy"], 4),
            "most_frequent_tag": round(metrics["baseline_most_frequent_tag"]["test"]["accuracy"], 4),
            "train_seconds": seconds, "data": "en_ewt dev -> test"}


def sine(seeds: int) -> dict:
    """Test MSE of ``series-lstm`` on the daily minimum temperatures, beside the last-value forecast."""
    data = data_path("timeseries", "daily-min-temperatures.csv")
    metrics, seconds = train_template("series-lstm", {"data.path": str(data)}, ["data.column=Temp"])
    return {"metric": "test_mse", "value": round(metrics["test"]["mse"], 5),
            "last_value_mse": round(metrics["baseline_last_value"]["test"]["mse"], 5), "train_seconds": seconds,
            "data": data.name}


MEASURES: dict[str, tuple[Callable[[int], dict], tuple[str, ...]]] = {
    "textgen": (textgen, ("tinyshakespeare", "input.txt")),
    "sentiment": (sentiment, ("sentiment",)),
    "translate": (translate, ("translation", "fra-eng.tsv")),
    "tagging": (tagging, ("tagging", "en_ewt-ud-dev.conllu")),
    "sine": (sine, ("timeseries", "daily-min-temperatures.csv")),
}


def measure(tasks: list[str], seeds: int, log: Callable[[str], None] = print) -> tuple[dict, list[str]]:
    """``{task: figures or None}`` and the notes for what was not measured."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from seqapp import backend

    backend.start()
    figures, notes = dict.fromkeys(TASKS), []
    for task in tasks:
        function, parts = MEASURES[task]
        if not data_path(*parts).exists():
            notes.append(f"quality.{task}: {data_path(*parts)} not found")
            continue
        start = time.perf_counter()
        figures[task] = {**function(seeds), "measured_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                         "load_average": round(os.getloadavg()[0], 2)}  # textgen's figure is per training time
        log(f"{task}: {json.dumps(figures[task])} ({time.perf_counter() - start:.0f} s)")
    return figures, notes


def markdown(figures: dict) -> str:
    """One table row per measured task."""
    rows = ["| task | data | figure | value | beside it |", "| --- | --- | --- | ---: | --- |"]
    for task, f in figures.items():
        if f is None:
            continue
        value = f"{f['value']}" + (f" ± {f['std']}" if f.get("std") is not None else "")
        beside = {key: value for key, value in f.items()
                  if key not in ("metric", "value", "std", "data", "seeds", "train_seconds", "measured_utc",
                                "load_average", "note")}
        rows.append(f"| {task} | {f['data']} | {f['metric']} | {value} | "
                    f"{', '.join(f'{k} {v}' for k, v in beside.items())} |")
    return "\n".join(rows)


def merge(figures: dict, notes: list[str], folder: Path) -> Path:
    """Put ``figures`` under ``quality`` of ``folder/latest.json`` (kept otherwise; a measured task
    replaces its old entry, an unmeasured one keeps it) and write ``quality.md``."""
    path = folder / "latest.json"
    result = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    quality = result.get("quality") or {}
    quality.update({task: f for task, f in figures.items() if f is not None or task not in quality})
    result["quality"] = quality
    result.setdefault("notes", []).extend(notes)
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (folder / "quality.md").write_text(markdown(quality) + "\n", encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {', '.join(TASKS)}")
    parser.add_argument("--seeds", type=int, default=3, help="sentiment: train seeds 0..N-1 (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of latest.json")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON line, write nothing")
    args = parser.parse_args(argv)
    tasks = [task.strip() for task in args.tasks.split(",") if task.strip()]
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or not tasks or args.seeds < 1:
        parser.error(f"--tasks takes {', '.join(TASKS)} and --seeds at least 1")
    figures, notes = measure(tasks, args.seeds, log=lambda line: print(line, file=sys.stderr))
    if args.json:
        print(json.dumps({"quality": figures, "notes": notes}))
        return 0
    path = merge(figures, notes, args.out)
    print(markdown(figures))
    print(f"wrote quality to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
