"""Sentiment benchmark: seqapp's recurrent classifier vs a bag-of-words logistic regression.

Both read the same stratified 80/10/10 split of the shared "Sentiment Labelled Sentences"
files (amazon + imdb, 2,000 sentences), made by the sentiment task's own ``load_data``
with its fixed split seed. The baselines are scikit-learn's ``CountVectorizer`` (words, and words +
bigrams) + ``LogisticRegression`` with C chosen on the validation split; seqapp trains the given
template (default: ``sentiment``) once per random seed. Prints a Markdown table and
writes it to ``bench/results/sentiment_vs_bow.md`` (or ``--output``); it never asserts
anything about speed.

    python bench/sentiment_vs_bow.py                       # 3 seeds of the default template
    python bench/sentiment_vs_bow.py --seeds 1 --set model.cell=lstm
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "sentiment"
C_GRID = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def bag_of_words(splits, ngram_range: tuple[int, int] = (1, 2)) -> dict:
    """Test accuracy and macro F1 of a count-vector logistic regression (word n-grams of
    ``ngram_range``: unigrams and bigrams by default), C tuned on val."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = CountVectorizer(lowercase=True, ngram_range=ngram_range)
    train_x = vectorizer.fit_transform(splits.train.texts)
    start = time.perf_counter()
    fitted = {c: LogisticRegression(C=c, max_iter=5000).fit(train_x, splits.train.labels) for c in C_GRID}
    best_c = max(C_GRID, key=lambda c: fitted[c].score(vectorizer.transform(splits.val.texts), splits.val.labels))
    predicted = fitted[best_c].predict(vectorizer.transform(splits.test.texts))
    return {
        "accuracy": accuracy_score(splits.test.labels, predicted),
        "macro_f1": f1_score(splits.test.labels, predicted, average="macro"),
        "seconds": time.perf_counter() - start,
        "note": f"word {ngram_range[0]}-{ngram_range[1]}-grams, C={best_c:g} chosen on val "
                f"(time: all {len(C_GRID)} fits), "
                f"vocabulary {len(vectorizer.vocabulary_):,}",
    }


def seqapp_runs(template: str, data: Path, overrides: list[str], seeds: int) -> list[dict]:
    """Train ``template`` on ``data`` once per seed; test metrics and wall time of each run."""
    from seqapp.tasks import load_config
    from seqapp.training import train

    results = []
    with tempfile.TemporaryDirectory() as out:
        for seed in range(seeds):
            cfg = load_config(template, overrides, {"data.path": str(data), "train.random_seed": seed})
            start = time.perf_counter()
            run = train(cfg, Path(out), verbose=0, log=lambda message: None)
            metrics = run.metrics
            result = {"seed": seed, "accuracy": metrics["test"]["accuracy"], "macro_f1": metrics["test"]["macro_f1"],
                      "seconds": time.perf_counter() - start, "epochs": metrics["epochs_trained"],
                      "baseline": metrics["baseline_majority"]["test"]["accuracy"]}
            results.append(result)
            print(f"  seed {seed}: test accuracy {result['accuracy']:.3f}, macro F1 {result['macro_f1']:.3f}, "
                  f"{result['epochs']} epochs, {result['seconds']:.0f} s", file=sys.stderr)
    return results


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (just the value for one run)."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(template: str, overrides: list[str], splits, bows: list[dict], runs: list[dict]) -> str:
    """The comparison as a Markdown table, with the setting it was measured in."""
    setting = " ".join(f"--set {o}" for o in overrides) or "(template defaults)"
    lines = [
        f"Sentiment, amazon + imdb, stratified split train {len(splits.train)} / val {len(splits.val)} / "
        f"test {len(splits.test)}; {os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d')}",
        "",
        "| model | test accuracy | test macro F1 | train time (s) | notes |",
        "| --- | --- | --- | --- | --- |",
        f"| majority class | {runs[0]['baseline']:.3f} | - | - | |",
        *(f"| bag-of-words logistic regression (scikit-learn) | {bow['accuracy']:.3f} | {bow['macro_f1']:.3f} | "
          f"{bow['seconds']:.1f} | {bow['note']} |" for bow in bows),
        f"| seqapp `{template}` {setting} | {mean_std([r['accuracy'] for r in runs])} | "
        f"{mean_std([r['macro_f1'] for r in runs])} | {statistics.mean(r['seconds'] for r in runs):.0f} | "
        f"{len(runs)} seed(s), mean ± std; epochs {', '.join(str(r['epochs']) for r in runs)} |",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder (or file) of labelled sentences")
    parser.add_argument("--template", default="sentiment", help="seqapp template name or path")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override, e.g. model.cell=lstm")
    parser.add_argument("--seeds", type=int, default=3, help="seqapp runs, random seeds 0..N-1")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "sentiment_vs_bow.md",
                        help="also write the table to this file")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is not present", file=sys.stderr)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from seqapp import backend
    from seqapp.tasks import load_config
    from seqapp.tasks.sentiment import Sentiment

    backend.start()
    cfg = load_config(args.template, args.overrides, {"data.path": str(args.data)})
    splits = Sentiment().load_data(cfg)
    bows = [bag_of_words(splits, (1, 1)), bag_of_words(splits, (1, 2))]
    runs = seqapp_runs(args.template, args.data, args.overrides, args.seeds)
    result = table(args.template, args.overrides, splits, bows, runs)
    print(result)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(result + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
