"""Sentiment (text) classification: label short texts with a recurrent network.

Training reads labelled texts from TSV/CSV files (the headerless ``sentence<TAB>label``
format works as is), splits them by class with a fixed seed (stratified train / val /
test), tokenizes with the shared word tokenizer, pads to one length and masks the padding
(``Embedding(mask_zero=True)``), so padded steps never change a prediction. The model is
Embedding -> recurrent stack -> Dense: one sigmoid unit for two classes, a softmax for
more. Imbalanced classes are weighted by inverse frequency through sample weights.
With ``train.calibrate`` one temperature, fitted on the validation split after training,
divides the head's logits before its sigmoid or softmax (``preprocessing.json``'s
``calibration``), on every engine and in the export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seqapp import datafiles, litert
from seqapp.config import Config, ModelConfig, setting
from seqapp.errors import SeqappError
from seqapp.files import COUNT, NUMBER, TEXT, list_of
from seqapp.layers import apply_stack, calibrated, head_features, head_logits, output_head, recurrent_stack
from seqapp.metrics import (
    as_logits,
    calibration_change,
    class_table,
    classification_metrics,
    confusion_table,
    fit_temperature,
    frequency_probabilities,
    probability_lines,
    probability_scores,
    scaled_probabilities,
)
from seqapp.plots import plot_confusion, probability_plots
from seqapp.tasks.base import (
    CALIBRATION_FIELDS,
    JSON_OUTPUT,
    METRIC,
    TOKENIZER_FIELDS,
    Objective,
    PredictOption,
    Splits,
    Task,
    baseline_metrics,
    cut_notes,
    figure,
    held_out,
    main_split,
    split_metrics,
    temperature,
    training_part,
    worst_first,
)
from seqapp.tasks.warm_start import (
    PRETRAINED_FIELDS,
    check_outside_files,
    coverage_fields,
    sized_model_config,
    start_weights,
    validate_settings,
)
from seqapp.text import (
    LEVELS,
    OOV_ID,
    PAD_ID,
    SUBWORD_MODEL_HELP,
    SUBWORD_MODELS,
    SUBWORD_VOCAB_HELP,
    SUBWORD_VOCAB_RANGE,
    SUBWORD_VOCAB_SIZE,
    Tokenizer,
    pad,
)

DEFAULT_DATA = "sentiment.tsv"
# Files in a data folder that are documentation, not data.
SKIPPED_NAMES = ("readme", "license", "licence", "sources", "citation")
PREDICT_BATCH_SIZE = 1024
LITERT_BATCH = 32  # texts per call of the LiteRT classifier (its batch is fixed when converted)
FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # the smallest normal float32: LiteRT's probabilities are float32
FLOAT32_HALF_ULP = 2.0**-25  # half the float32 spacing below 1: 1 - p of a float32 p that rounded to 1


@dataclass
class SentimentDataConfig:
    """Where the labelled texts come from, how they are split and how they are tokenized."""

    path: str | None = setting(None, "TSV/CSV file or folder of them (--data); null: the bundled data/sentiment.tsv")
    pattern: str = setting("*", "which files of a folder to read (README/LICENSE/SOURCES files are skipped)")
    format: str = setting("auto", "file format; auto: .csv files are CSV, anything else TSV",
                          choices=("auto", "tsv", "csv"))
    header: bool | None = setting(None, "first row is a header; null: when columns are named, or when the "
                                  "first row's label appears nowhere else")
    text_column: str = setting("0", "column of the text: a header name or a 0-based index")
    label_column: str = setting("1", "column of the label: a header name or a 0-based index")
    classes: list[str] | None = setting(None, "the allowed labels in output order, e.g. [negative, positive]; "
                                        "null: all labels found, sorted")
    level: str = setting("word", "tokens: words and punctuation marks, characters, or SentencePiece subwords "
                         "(see data.vocab_size)", choices=LEVELS)
    lower: bool = setting(True, "lower-case the texts")
    strip_punctuation: bool = setting(False, "drop punctuation marks (by default they are tokens)")
    max_vocab: int | None = setting(10000, "most frequent tokens kept, specials included; others become <unk>; "
                                    "null: all (level char and word)", min=5)
    vocab_size: int = setting(SUBWORD_VOCAB_SIZE, SUBWORD_VOCAB_HELP, **SUBWORD_VOCAB_RANGE)
    subword_model: str = setting("unigram", SUBWORD_MODEL_HELP, choices=SUBWORD_MODELS)
    min_count: int = setting(1, "tokens seen fewer times in training become <unk> (level char and word)", min=1)
    max_len: int = setting(60, "tokens kept per text (its beginning); shorter texts are padded and masked", min=1)
    val_fraction: float = setting(0.1, "share of each label held out for validation", min=0.0, max=0.5,
                                  high_open=True)
    test_fraction: float = setting(0.1, "share of each label held out for the test", min=0.0, max=0.5,
                                   high_open=True)
    split_seed: int = setting(0, "seed of the stratified train / val / test shuffle", min=0)
    balance_classes: bool = setting(True, "weight each label by inverse frequency in the training split")


@dataclass
class SentimentModelConfig(ModelConfig):
    """The shared recurrent stack, plus how its outputs are summed up into one vector."""

    pooling: str = setting("last", "last: the final state (of both directions); mean / max: over all "
                           "unpadded steps", choices=("last", "mean", "max"))
    # Outside knowledge (seqapp.tasks.warm_start): read once at training, then part of model.keras.
    embedding_dim: int | None = setting(64, "size of the token embedding vectors; null: the size of "
                                        "model.pretrained_embeddings' vectors or of model.init_from's run",
                                        min=1, max=8192)
    pretrained_embeddings: str | None = setting(None, "a GloVe or word2vec text file (.gz too) whose vectors "
                                                "start the embedding rows of the words it has; null: random start")
    init_from: str | None = setting(None, "a word-level textgen run folder: the embedding rows of shared tokens "
                                    "and the recurrent layers start from it (same cell, units, layers); null: none")
    freeze_embeddings: bool = setting(False, "keep the embedding from pretrained_embeddings / init_from fixed "
                                      "while training; false: fine-tune it")


@dataclass
class Examples:
    """Labelled texts, with ``file:line`` of each for error messages."""

    texts: list[str]
    labels: list[str]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Any) -> Examples:
        """The examples at ``indices``, in that order."""
        return Examples([self.texts[i] for i in indices], [self.labels[i] for i in indices],
                        [self.sources[i] for i in indices])


class Sentiment(Task):
    """Text classifier; ``seqapp predict "some text"`` prints label and probability."""

    name: ClassVar[str] = "sentiment"
    summary: ClassVar[str] = "classify short texts (reviews, comments) into labels such as positive / negative"
    DataConfig: ClassVar[type] = SentimentDataConfig
    ModelConfig: ClassVar[type] = SentimentModelConfig
    predict_options: ClassVar[tuple[PredictOption, ...]] = (JSON_OUTPUT,)
    preprocessing_fields: ClassVar[dict] = {"tokenizer": TOKENIZER_FIELDS, "classes": list_of(TEXT, least=2),
                                            "max_len": COUNT, "class_weights": list_of(NUMBER),
                                            "majority_class": TEXT, "pretrained?": PRETRAINED_FIELDS,
                                            "calibration?": CALIBRATION_FIELDS}
    metrics_fields: ClassVar[dict] = {**split_metrics({"accuracy": METRIC, "macro_f1": METRIC}),
                                      "baseline_majority?": baseline_metrics("accuracy")}
    tiny: ClassVar[dict] = {
        "set": ["model.units=8", "model.embedding_dim=8", "model.bidirectional=false", "data.max_len=16"],
        "inputs": ["works great, love it", "the battery died after a day"],
        "options": {},
    }
    calibrates: ClassVar[bool] = True

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        data = cfg.data
        if data.val_fraction + data.test_fraction >= 0.9:
            raise SeqappError("data.val_fraction + data.test_fraction must be below 0.9; keep most data for training")
        if cfg.train.calibrate and data.val_fraction == 0:
            raise SeqappError("train.calibrate fits its temperature on the validation split, and data.val_fraction "
                              "is 0; set data.val_fraction above 0 (e.g. 0.1)")
        if data.classes is not None and (len(data.classes) < 2 or len(set(data.classes)) != len(data.classes)):
            raise SeqappError(f"data.classes={data.classes!r} must list at least two different labels")
        validate_settings(cfg)

    @classmethod
    def check_sources(cls, cfg: Config) -> None:
        check_outside_files(cfg)

    # -- data -------------------------------------------------------------------------
    def load_data(self, cfg: Config) -> Splits:
        """All labelled texts, split by class into train / val / test with ``data.split_seed``."""
        data = cfg.data
        examples = read_examples(data_files(data.path, data.pattern), data)
        check_labels(examples, data.classes)
        return stratified_split(examples, data.val_fraction, data.test_fraction, data.split_seed)

    def fit_preprocessing(self, cfg: Config, splits: Splits) -> dict:
        data = cfg.data
        tokenizer = Tokenizer(data.level, lower=data.lower, strip_punctuation=data.strip_punctuation,
                              subword_model=data.subword_model)
        tokenizer.fit(splits.train.texts, max_size=data.vocab_size if data.level == "subword" else data.max_vocab,
                      min_count=data.min_count)
        classes = data.classes or sorted_labels(splits.train.labels + splits.val.labels + splits.test.labels)
        counts = np.bincount(label_ids(splits.train, classes), minlength=len(classes))
        weights = (len(splits.train) / (len(classes) * np.maximum(counts, 1)) if data.balance_classes
                   else np.ones(len(classes)))
        longest = max(len(tokenizer.split(text)) for text in splits.train.texts)
        return {
            "tokenizer": tokenizer.to_dict(),
            "classes": classes,
            "max_len": max(1, min(data.max_len, longest)),
            "class_weights": [round(float(w), 6) for w in weights],
            "majority_class": classes[int(np.argmax(counts))],
            **coverage_fields(cfg, tokenizer.vocab),
        }

    def datasets(self, cfg: Config, prep: dict, splits: Splits) -> tuple[Any, Any]:
        train = labelled_dataset(splits.train, prep, cfg.train.batch_size, shuffle=True, seed=cfg.train.random_seed)
        val = labelled_dataset(splits.val, prep, cfg.train.batch_size, shuffle=False) if len(splits.val) else None
        return train, val

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        model = classifier(len(prep["tokenizer"]["vocab"]), len(prep["classes"]),
                           sized_model_config(cfg.model, prep))
        start_weights(model, cfg, prep)  # pretrained_embeddings / init_from, if set
        return model

    def objective(self, cfg: Config, prep: dict) -> Objective:
        import keras

        if len(prep["classes"]) == 2:
            return Objective(loss=keras.losses.BinaryCrossentropy(),
                             metrics=[keras.metrics.BinaryAccuracy(name="accuracy")])
        return Objective(loss=keras.losses.SparseCategoricalCrossentropy(),
                         metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])

    # -- evaluation -------------------------------------------------------------------
    def calibrate(self, run: Any, splits: Splits) -> dict | None:
        """The temperature that minimises the validation split's negative log-likelihood."""
        if not len(splits.val):
            return None
        truth = label_ids(splits.val, run.preprocessing["classes"])
        return {"temperature": fit_temperature(class_logits(run, splits.val.texts), truth), "examples": len(truth)}

    def evaluate(self, run: Any, splits: Splits, engine: str = "tf", errors: int = 0) -> dict:
        """Accuracy, per-class precision / recall / F1, macro F1 and the confusion matrix on
        val and test, beside the majority-class baseline; ROC-AUC, PR-AUC, expected calibration
        error, Brier score and negative log-likelihood of the probabilities, beside those of the
        baseline's (the training split's class frequencies); with a temperature, the calibration
        error and log-likelihood before and after it; the ``errors`` examples of the main split
        with the highest loss (the most confident wrong ones first)."""
        classes = run.preprocessing["classes"]
        majority = classes.index(run.preprocessing["majority_class"])
        for part in (splits.train, splits.val, splits.test):
            check_labels(part, classes, run_classes=True)
        scale = temperature(run.preprocessing)
        train_truth = label_ids(splits.train, classes) if len(splits.train) else None
        metrics: dict[str, Any] = {"classes": classes}
        self.scored: dict[Any, tuple] = {}  # for plots() of this run: the same probabilities, not computed twice
        worst: list[dict] = []
        for split, examples in held_out(splits).items():
            truth = label_ids(examples, classes)
            logits = class_logits(run, examples.texts, engine)
            probabilities = scaled_probabilities(logits, scale)
            metrics[split] = {**classification_metrics(truth, probabilities.argmax(axis=1), classes),
                              **probability_scores(probabilities, truth)}
            baseline = classification_metrics(truth, np.full_like(truth, majority), classes)
            metrics.setdefault("baseline_majority", {"label": classes[majority]})[split] = {
                "accuracy": baseline["accuracy"], "macro_f1": baseline["macro_f1"],
                **(probability_scores(frequency_probabilities(train_truth, len(classes), len(truth)), truth)
                   if train_truth is not None else {})}
            if scale != 1.0:
                metrics.setdefault("calibration", {"temperature": scale})[split] = calibration_change(
                    logits, truth, scale)
            self.scored[run.path, split] = (probabilities, truth, logits)
            if errors:
                worst = worst_examples(examples, probabilities, truth, classes, errors)
        parts = {"test": splits.test} if splits.source else {"train": splits.train, "val": splits.val,
                                                              "test": splits.test}
        metrics["examples"] = {name: len(part) for name, part in parts.items()}
        return {**metrics, "worst": worst} if errors else metrics

    def new_data(self, run: Any, path: Path) -> Splits:
        """The labelled texts of ``path`` (a file, or a folder read with data.pattern), in the run's
        format and columns, as the test split; the run's training split for the class-frequency baseline."""
        data = run.config.data
        examples = read_examples(data_files(str(path), data.pattern), data)
        check_labels(examples, run.preprocessing["classes"], run_classes=True)
        train = training_part(self, run, "the class-frequency baseline")
        return Splits(train=train if train is not None else Examples([], [], []), val=Examples([], [], []),
                      test=examples, source=str(path))

    def format_worst(self, records: list[dict]) -> list[str]:
        return [f"loss {record['loss']:.4f}  {record['label']} read as {record['predicted']} "
                f"({record['probability']:.4f})  {record['line']}: {record['text']}" for record in records]

    def headline(self, metrics: dict) -> str:
        split = main_split(metrics)
        if split is None:
            return ""
        base = metrics.get("baseline_majority", {}).get(split, {}).get("accuracy")
        base_text = f" (majority {base:.3f})" if base is not None else ""
        return (f"{split} accuracy {figure(metrics[split]['accuracy'], '.3f')}, "
                f"macro F1 {figure(metrics[split]['macro_f1'], '.3f')}{base_text}")

    def format_metrics(self, metrics: dict) -> list[str]:
        """Accuracy and macro F1 per split, the baseline, then per-class and confusion tables."""
        split = main_split(metrics)
        if split is None:
            return ["no held-out examples to evaluate on"]
        examples = metrics.get("examples", {})
        lines = ["examples: " + ", ".join(f"{name} {count}" for name, count in examples.items())]
        baseline = metrics.get("baseline_majority", {})
        for name in ("val", "test", "train"):
            if name in metrics:
                base = baseline.get(name, {})
                lines.append(f"{name:<5} accuracy {metrics[name]['accuracy']:.4f}  "
                             f"macro F1 {metrics[name]['macro_f1']:.4f}"
                             f"   majority class '{baseline.get('label')}': accuracy {base.get('accuracy', 0):.4f}"
                             f"  macro F1 {base.get('macro_f1', 0):.4f}")
        lines.extend(probability_lines(metrics, baseline, "class frequencies"))
        lines.append("")
        lines.extend(class_table(metrics[split], metrics["classes"], split))
        lines.append("")
        lines.extend(confusion_table(metrics[split]["confusion_matrix"], metrics["classes"], split))
        return lines

    def plots(self, run: Any, splits: Splits, folder: Any) -> None:
        """The confusion matrix of the main held-out split as ``confusion_matrix.png``; its ROC and
        precision-recall curves and reliability diagram as ``roc.png``, ``pr.png``, ``calibration.png``."""
        metrics = run.metrics or self.evaluate(run, splits)
        split = main_split(metrics)
        if split is None:
            return
        plot_confusion(metrics[split]["confusion_matrix"], metrics["classes"], split,
                       Path(folder) / "confusion_matrix.png")
        scored = getattr(self, "scored", {}).get((run.path, split))
        if scored is None:
            examples = getattr(splits, split)
            logits = class_logits(run, examples.texts)
            scored = (scaled_probabilities(logits, temperature(run.preprocessing)),
                      label_ids(examples, metrics["classes"]), logits)
        probability_plots(scored, metrics["classes"], split, temperature(run.preprocessing), Path(folder))

    # -- prediction -------------------------------------------------------------------
    def check_inputs(self, inputs: list[str], **opts: Any) -> None:
        if not inputs:
            raise SeqappError("no texts to classify; give them as arguments, with --file FILE, or '-' to read stdin")

    def engine(self, run: Any, requested: str) -> str:
        return litert.choose(run.path, "classifier", requested)

    def export(self, run: Any, folder: Path) -> None:
        """The classifier as a LiteRT graph over LITERT_BATCH texts of max_len tokens."""
        import tensorflow as tf

        shape = [LITERT_BATCH, run.preprocessing["max_len"]]
        litert.export(folder, "classifier", calibrated(run.model, temperature(run.preprocessing)),
                      [tf.TensorSpec(shape, tf.int32, name="tokens")])

    def serving_module(self, run: Any) -> Any:
        """``seqapp export``: raw texts in, labels and probabilities out (see ``sentiment_serving``)."""
        from seqapp.tasks.sentiment_serving import SentimentServing

        return SentimentServing(run)

    def predict(self, run: Any, inputs: list[str], **opts: Any) -> Iterator[str]:
        """Label and probability of each text, all texts in one batched model call."""
        self.check_inputs(inputs)
        classes = run.preprocessing["classes"]
        tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
        notes = cut_notes([len(tokenizer.split(text)) for text in inputs], run.preprocessing["max_len"], "read")
        probabilities = class_probabilities(run, inputs, opts.get("engine", "tf"))
        width = max(len(label) for label in classes)
        for text, probs, note in zip(inputs, probabilities, notes):
            best = int(probs.argmax())
            if opts.get("json"):
                yield json.dumps({"text": text, "label": classes[best], "probability": round(float(probs[best]), 6),
                                  "probabilities": {label: round(float(p), 6) for label, p in zip(classes, probs)},
                                  **({"warning": note} if note else {})}, ensure_ascii=False)
            else:
                yield f"{classes[best].ljust(width)}  {probs[best]:.4f}  {text}"


# -- reading data ---------------------------------------------------------------------
def data_files(path: str | None, pattern: str = "*") -> list[Path]:
    """The files to read: the bundled set, one file, or the matching files of a folder."""
    if path is None:
        return [datafiles.bundled(DEFAULT_DATA)]
    folder = Path(path)
    if not folder.is_dir():
        return [folder]
    found = [file for file in sorted(folder.glob(pattern)) if file.is_file() and not file.name.startswith(".")
             and not file.stem.lower().startswith(SKIPPED_NAMES)]
    if not found:
        raise SeqappError(f"data folder {folder} has no files matching '{pattern}'; "
                          "put TSV/CSV files there or change data.pattern")
    return found


def read_examples(files: list[Path], data: Any) -> Examples:
    """Texts and labels of all ``files``, checked row by row."""
    examples = Examples([], [], [])
    for path in files:
        part = read_file(path, data)
        examples.texts += part.texts
        examples.labels += part.labels
        examples.sources += part.sources
    return examples


def read_file(path: Path, data: Any) -> Examples:
    """The labelled texts of one TSV/CSV file (see ``SentimentDataConfig`` for the options)."""
    rows = datafiles.read_rows(path, data.format)
    if not rows:
        raise SeqappError(f"data file {path} has no rows; give one text and label per line")
    by_name = not (data.text_column.isdigit() and data.label_column.isdigit())
    header = data.header if data.header is not None else by_name or looks_like_header(rows, data.label_column)
    names = [name.strip() for name in rows[0][1]] if header else []
    text_at = column_index(data.text_column, names, "text", path)
    label_at = column_index(data.label_column, names, "label", path)
    width = len(rows[0][1])
    if max(text_at, label_at) >= width:
        raise SeqappError(f"{path.name}:{rows[0][0]} has {width} column(s), so data.text_column={data.text_column} / "
                          f"data.label_column={data.label_column} do not exist; set them to existing columns")
    examples = Examples([], [], [])
    for number, fields in rows[1:] if header else rows:
        where = f"{path.name}:{number}"
        if len(fields) != width:
            raise SeqappError(f"{where} has {len(fields)} fields but line {rows[0][0]} has {width}; "
                              "a text must not contain the separator (tab for TSV; quote it in CSV)")
        text, label = fields[text_at].strip(), fields[label_at].strip()
        if not text:
            raise SeqappError(f"{where}: the text is empty; remove the line or write a text")
        if not label:
            raise SeqappError(f"{where}: the label is empty; give every text a label")
        examples.texts.append(text)
        examples.labels.append(label)
        examples.sources.append(where)
    if not examples.texts:  # only the header row
        raise SeqappError(f"data file {path} has a header but no rows; add labelled texts below it, "
                          "one text and label per line")
    return examples


def looks_like_header(rows: list[tuple[int, list[str]]], label_column: str) -> bool:
    """A first row whose label value appears in no other row is a header (e.g. 'label')."""
    at = int(label_column)
    labels = [fields[at].strip() for _, fields in rows if len(fields) > at]
    return len(rows) >= 3 and len(labels) == len(rows) and labels[0] not in labels[1:]


def column_index(spec: str, names: list[str], what: str, path: Path) -> int:
    """The 0-based index of a column given as an index or a header name."""
    if spec.isdigit():
        return int(spec)
    if spec in names:
        return names.index(spec)
    shown = ", ".join(names) if names else "none"
    raise SeqappError(f"{path.name}: no column named '{spec}' for the {what} (columns: {shown}); "
                      f"set data.{what}_column to a column name or a 0-based index")


def sorted_labels(labels: list[str]) -> list[str]:
    """Distinct labels, numerically if they are all integers, else alphabetically."""
    distinct = set(labels)
    if all(label.lstrip("-").isdigit() for label in distinct):
        return sorted(distinct, key=int)
    return sorted(distinct)


def check_labels(examples: Examples, classes: list[str] | None, run_classes: bool = False) -> None:
    """At least two classes, and no label outside ``classes`` (error names the line)."""
    if classes is not None:
        allowed = set(classes)
        for label, where in zip(examples.labels, examples.sources):
            if label not in allowed:
                fix = ("train a new run on this data" if run_classes
                       else "add it to data.classes or fix the line")
                raise SeqappError(f"{where}: unknown label '{label}' (known labels: {', '.join(classes)}); {fix}")
    if not run_classes and len(examples.labels) == 1:  # e.g. a file holding only its header line
        line = f"{examples.sources[0]} ('{examples.texts[0][:40]}' / '{examples.labels[0][:40]}')"
        raise SeqappError(f"the data has only one row, {line}: a header with no data rows, or a single text; "
                          "add labelled texts of at least two labels")
    if not run_classes and len(set(examples.labels)) < 2:
        only = examples.labels[0] if examples.labels else "none"
        raise SeqappError(f"the data has a single label ('{only}'); a classifier needs texts of at least two labels")


def stratified_split(examples: Examples, val_fraction: float, test_fraction: float, seed: int) -> Splits:
    """Shuffle each class with ``seed`` and cut the same fractions from each into val and test.

    Every class keeps at least one training example; each split keeps file order.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    labels = np.asarray(examples.labels)
    for label in sorted(set(examples.labels)):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(round(len(members) * test_fraction), len(members) - 1)
        n_val = min(round(len(members) * val_fraction), len(members) - 1 - n_test)
        parts["test"] += members[:n_test].tolist()
        parts["val"] += members[n_test:n_test + n_val].tolist()
        parts["train"] += members[n_test + n_val:].tolist()
    return Splits(**{name: examples.subset(sorted(indices)) for name, indices in parts.items()})


# -- tensors --------------------------------------------------------------------------
def label_ids(examples: Examples, classes: list[str]) -> np.ndarray:
    """Class index of each example."""
    index = {label: i for i, label in enumerate(classes)}
    return np.asarray([index[label] for label in examples.labels], np.int32)


def litert_probabilities(run: Any, x: np.ndarray) -> np.ndarray:
    """The classifier's outputs for padded ids ``x`` from its LiteRT graph (fixed batch and length)."""
    full = pad(x, run.preprocessing["max_len"])
    filler = pad([[OOV_ID]], full.shape[1])[0]  # one unknown token: never a fully masked row
    return litert.batched(litert.load(run.path, "classifier"), "tokens", full, filler).astype(np.float64)


def encode_texts(tokenizer: Tokenizer, texts: list[str], max_len: int) -> np.ndarray:
    """Token ids padded after the text (id 0, masked) to the longest text, at most ``max_len``.

    A text with no tokens is read as one unknown token, so no row is fully masked.
    """
    ids = [tokenizer.encode(text)[:max_len] or [OOV_ID] for text in texts]
    return pad(ids, max(len(row) for row in ids))


def labelled_dataset(examples: Examples, prep: dict, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """A ``tf.data`` pipeline of (token ids, label, class weight) batches."""
    import tensorflow as tf

    from seqapp.pipeline import shuffled

    tokenizer = Tokenizer.from_dict(prep["tokenizer"])
    x = encode_texts(tokenizer, examples.texts, prep["max_len"])
    y = label_ids(examples, prep["classes"])
    weights = np.asarray(prep["class_weights"], np.float32)[y]
    targets = y[:, None].astype(np.float32) if len(prep["classes"]) == 2 else y
    if shuffle:
        dataset = shuffled(tuple(tf.convert_to_tensor(part) for part in (x, targets, weights)), len(y), seed,
                           batch_size)
    else:
        dataset = tf.data.Dataset.from_tensor_slices((x, targets, weights)).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def classifier(vocab_size: int, num_classes: int, model_cfg: Any) -> Any:
    """Embedding (padding masked) -> recurrent stack -> Dense class probabilities."""
    import keras

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = keras.layers.Embedding(vocab_size, model_cfg.embedding_dim, mask_zero=True, name="embedding")(tokens)
    stack = recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                            bidirectional=model_cfg.bidirectional, return_sequences=model_cfg.pooling != "last",
                            name="encoder")
    x, _ = apply_stack(stack, x)
    if model_cfg.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_over_steps")(x)
    elif model_cfg.pooling == "max":  # padded steps get a very low value, so they are never the maximum
        steps = keras.ops.expand_dims(keras.ops.not_equal(tokens, PAD_ID), -1)
        x = keras.ops.max(keras.ops.where(steps, x, -1e9), axis=1)
    if num_classes == 2:
        probabilities = output_head(1, "sigmoid", name="positive_probability")(x)
    else:
        probabilities = output_head(num_classes, "softmax", name="class_probabilities")(x)
    return keras.Model(tokens, probabilities, name="text_classifier")


def class_logits(run: Any, texts: list[str], engine: str = "tf") -> np.ndarray:
    """A (texts, classes) array of the output head's logits (a sigmoid head's ``z`` as ``[0, z]``),
    in one batched call: the classes' probabilities are their softmax. ``litert``: the logits the
    LiteRT classifier's probabilities imply (:func:`litert_logits`), without TensorFlow."""
    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    x = encode_texts(tokenizer, texts, run.preprocessing["max_len"])
    if engine == "litert":
        return litert_logits(run, x)
    features = head_features(run.model).predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0)
    return as_logits(head_logits(run.model, features))


def litert_logits(run: Any, x: np.ndarray) -> np.ndarray:
    """Logits equal to the head's up to a constant per row (so with the same softmax), from the
    LiteRT classifier's probabilities (its temperature inside): ``temperature * log(p)``. Those
    are float32: a probability within float32's rounding of 1 (a sigmoid's complement) or of 0
    is held at that rounding, where the head's own logit may lie further out."""
    output = litert_probabilities(run, x)
    if output.shape[1] == 1:
        output = np.concatenate([np.maximum(1.0 - output, FLOAT32_HALF_ULP), output], axis=1)
    return temperature(run.preprocessing) * np.log(np.maximum(output, FLOAT32_TINY))


def worst_examples(examples: Examples, probabilities: np.ndarray, truth: np.ndarray, classes: list[str],
                   count: int) -> list[dict]:
    """``evaluate --errors``: the ``count`` examples with the highest loss (negative log-probability of
    the true label), worst first, with the label predicted and its probability."""
    chosen = probabilities.argmax(axis=1)
    losses = -np.log(np.maximum(probabilities[np.arange(len(truth)), truth], np.finfo(np.float64).tiny))
    return [{"line": examples.sources[i], "loss": round(float(losses[i]), 5), "label": classes[truth[i]],
             "predicted": classes[chosen[i]], "probability": round(float(probabilities[i, chosen[i]]), 5),
             "text": examples.texts[i]} for i in worst_first(losses.tolist(), count)]


def class_probabilities(run: Any, texts: list[str], engine: str = "tf") -> np.ndarray:
    """A (texts, classes) array of probabilities: one batched ``model.predict`` call, or the
    run's LiteRT classifier (``engine='litert'``) over batches of LITERT_BATCH. A calibrated
    run's temperature divides the logits first (its LiteRT graph holds it)."""
    scale = temperature(run.preprocessing)
    if engine != "litert" and scale != 1.0:
        return scaled_probabilities(class_logits(run, texts), scale)
    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    x = encode_texts(tokenizer, texts, run.preprocessing["max_len"])
    if engine == "litert":
        output = litert_probabilities(run, x)
    else:
        output = np.asarray(run.model.predict(x, batch_size=PREDICT_BATCH_SIZE, verbose=0), np.float64)
    if output.shape[1] == 1:
        output = np.concatenate([1.0 - output, output], axis=1)
    return output
