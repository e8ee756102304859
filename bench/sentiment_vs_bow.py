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
    python bench/sentiment_vs_bow.py --shift                # domain shift: amazon -> imdb, imdb -> amazon

With ``--shift`` each model trains on one source's train split (its val split chooses C and the
best epoch) and is tested on every sentence of the other source.
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


def bag_of_words(splits, ngram_range: tuple[int, int] = (1, 2), test=None) -> dict:
    """Test accuracy and macro F1 of a count-vector logistic regression (word n-grams of
    ``ngram_range``: unigrams and bigrams by default), C tuned on val; ``test``: other
    examples to test on than ``splits.test``."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    vectorizer = CountVectorizer(lowercase=True, ngram_range=ngram_range)
    train_x = vectorizer.fit_transform(splits.train.texts)
    start = time.perf_counter()
    fitted = {c: LogisticRegression(C=c, max_iter=5000).fit(train_x, splits.train.labels) for c in C_GRID}
    best_c = max(C_GRID, key=lambda c: fitted[c].score(vectorizer.transform(splits.val.texts), splits.val.labels))
    test = test or splits.test
    predicted = fitted[best_c].predict(vectorizer.transform(test.texts))
    return {
        "accuracy": accuracy_score(test.labels, predicted),
        "macro_f1": f1_score(test.labels, predicted, average="macro"),
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


def shifted_runs(template: str, source: Path, target, overrides: list[str], seeds: int) -> list[dict]:
    """Train ``template`` on ``source`` once per seed; accuracy and macro F1 of each on ``target``
    (all of another source's examples)."""
    import numpy as np
    from sklearn.metrics import f1_score

    from seqapp.tasks import load_config
    from seqapp.tasks.sentiment import class_probabilities
    from seqapp.training import train

    results = []
    with tempfile.TemporaryDirectory() as out:
        for seed in range(seeds):
            cfg = load_config(template, overrides, {"data.path": str(source), "train.random_seed": seed})
            run = train(cfg, Path(out), verbose=0, log=lambda message: None)
            classes = run.preprocessing["classes"]
            predicted = [classes[i] for i in class_probabilities(run, target.texts).argmax(axis=1)]
            right = [p == t for p, t in zip(predicted, target.labels)]
            results.append({"seed": seed, "accuracy": float(np.mean(right)),
                             "macro_f1": f1_score(target.labels, predicted, average="macro"),
                             "in_domain": run.metrics["test"]["accuracy"]})
            print(f"  {source.name} seed {seed}: shifted accuracy {results[-1]['accuracy']:.3f} "
                  f"(in-domain test {results[-1]['in_domain']:.3f})", file=sys.stderr)
    return results


def shift_table(template: str, overrides: list[str], folder: Path, seeds: int) -> str:
    """Domain shift, amazon -> imdb and imdb -> amazon: bag-of-words and seqapp, as a Markdown table."""
    from seqapp.tasks import load_config
    from seqapp.tasks.sentiment import Sentiment, read_file

    sources = {"amazon": folder / "amazon_cells_labelled.txt", "imdb": folder / "imdb_labelled.txt"}
    setting = " ".join(f"--set {o}" for o in overrides) or "(template defaults)"
    lines = [f"Sentiment under domain shift: trained on one source's train split (val: C and best epoch), "
             f"tested on all of the other source; {os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d')}", "",
             "| train -> test | BoW 1-gram | BoW 1-2-gram | seqapp accuracy | seqapp in-domain test |",
             "| --- | --- | --- | --- | --- |"]
    for name, source in sources.items():
        other = next(n for n in sources if n != name)
        cfg = load_config(template, overrides, {"data.path": str(source)})
        splits = Sentiment().load_data(cfg)
        target = read_file(sources[other], cfg.data)
        bows = [bag_of_words(splits, grams, test=target) for grams in ((1, 1), (1, 2))]
        runs = shifted_runs(template, source, target, overrides, seeds)
        lines.append(f"| {name} -> {other} | {bows[0]['accuracy']:.3f} | {bows[1]['accuracy']:.3f} | "
                     f"{mean_std([r['accuracy'] for r in runs])} | {mean_std([r['in_domain'] for r in runs])} |")
    lines += ["", f"seqapp `{template}` {setting}, {seeds} seed(s), mean ± std."]
    return "\n".join(lines)


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
    parser.add_argument("--shift", action="store_true",
                        help="domain shift instead: amazon -> imdb and imdb -> amazon (--data: the folder of both)")
    parser.add_argument("--output", type=Path, default=None,
                        help="also write the table to this file (default: bench/results/sentiment_vs_bow.md, "
                             "or sentiment_shift.md with --shift)")
    args = parser.parse_args()
    if not args.data.exists():
        print(f"skipped: {args.data} is not present", file=sys.stderr)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from seqapp import backend
    from seqapp.tasks import load_config
    from seqapp.tasks.sentiment import Sentiment

    backend.start()
    if args.shift:
        result = shift_table(args.template, args.overrides, args.data, args.seeds)
        print(result)
        write(args.output or ROOT / "bench" / "results" / "sentiment_shift.md", result)
        return
    cfg = load_config(args.template, args.overrides, {"data.path": str(args.data)})
    splits = Sentiment().load_data(cfg)
    bows = [bag_of_words(splits, (1, 1)), bag_of_words(splits, (1, 2))]
    runs = seqapp_runs(args.template, args.data, args.overrides, args.seeds)
    result = table(args.template, args.overrides, splits, bows, runs)
    print(result)
    write(args.output or ROOT / "bench" / "results" / "sentiment_vs_bow.md", result)


def write(path: Path, text: str) -> None:
    """Write ``text`` (and a final newline) to ``path``, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
