"""Sequence labelling: one tag per token (part of speech, named entities) with a recurrent network.

Sentences come from CoNLL-U or ``token<TAB>tag`` files (see ``tagging_data``). Each
token is read two ways: a word embedding (lower-cased words, padding masked with
``mask_zero``) and spelling features from a character CNN over the word's characters,
case kept (what lets the model tag words it never saw: ``-ly``, ``-ing``, capitals,
digits). Both go through a bidirectional recurrent stack that returns one vector per
token, then a softmax over the tags. The loss (with label smoothing) and the accuracy skip
padding (sample weight 0), and training batches hold sentences of similar length. Word dropout reads rare training
words as ``<unk>`` now and then (a word seen n times with probability ``word_dropout / n``,
drawn each epoch), so the model learns to lean on spelling and context for unknown words.
Evaluation reports token accuracy, per-tag scores, accuracy on tokens unseen in training
and a most-frequent-tag baseline (entity F1 for BIO tag sets), and how well the tag
probabilities rank and are calibrated over all tokens. With ``train.calibrate`` one
temperature, fitted on the validation split's tokens, divides the logits before the softmax.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seqapp.config import Config, ModelConfig, setting
from seqapp.errors import SeqappError
from seqapp.files import COUNT, FLAG, TEXT, list_of, nullable
from seqapp.layers import head_features, head_logits, is_recurrent, output_head, output_layer, recurrent_stack
from seqapp.metrics import (
    calibration_change,
    class_table,
    classification_metrics,
    entity_scores,
    fit_temperature,
    frequency_probabilities,
    is_bio,
    probability_lines,
    probability_scores,
    scaled_probabilities,
)
from seqapp.plots import plot_confusion, probability_plots
from seqapp.tasks.base import (
    CALIBRATION_FIELDS,
    JSON_OUTPUT,
    METRIC,
    Objective,
    PredictOption,
    Splits,
    Task,
    baseline_metrics,
    figure,
    held_out,
    log,
    main_split,
    split_metrics,
    temperature,
    training_part,
    worst_first,
)
from seqapp.tasks.tagging_data import (
    CONLLU_TAG_COLUMNS,
    Encoder,
    Sentences,
    load_splits,
    read_sentences,
    split_tokens,
    tagged_dataset,
    word_key,
)
from seqapp.text import PAD_ID, SPECIALS, Tokenizer

PREDICT_BATCH_SIZE = 256


@dataclass
class TaggingDataConfig:
    """Where the tagged sentences come from, how they are split and how words are read."""

    path: str | None = setting(None, "CoNLL-U or token<TAB>tag file; null = the bundled data/tagging.tsv")
    format: str = setting("auto", "auto (.conllu suffix or ten-field lines) | conllu | columns",
                          choices=("auto", "conllu", "columns"))
    tag_column: str = setting("upos", "CoNLL-U: upos | xpos | a 0-based column; columns: a 0-based column, "
                              "anything else means the last column")
    val_path: str | None = setting(None, "held-out validation file, instead of a split of data.path")
    test_path: str | None = setting(None, "held-out test file, instead of a split of data.path")
    val_fraction: float = setting(0.1, "share of data.path's sentences for validation (without val_path)",
                                  min=0.0, max=0.5, high_open=True)
    test_fraction: float = setting(0.1, "share of data.path's sentences for test (without test_path)",
                                   min=0.0, max=0.5, high_open=True)
    split_seed: int = setting(0, "shuffles the sentence split; fixed so evaluate sees the same test set", min=0)
    lower: bool = setting(True, "lower-case words for the word vocabulary (the characters keep their case)")
    min_count: int = setting(1, "drop words seen fewer times in training (they read as <unk>)", min=1)
    max_vocab: int | None = setting(None, "keep the most frequent words, specials included; null = all", min=5)
    max_word_len: int = setting(20, "characters per word for the spelling features (longer: start and end)",
                                min=4)


@dataclass
class TaggingModelConfig(ModelConfig):
    """The shared recurrent stack (bidirectional by default) plus the character CNN."""

    bidirectional: bool = setting(True, "read each sentence in both directions")
    char_dim: int = setting(24, "size of each character's embedding", min=1)
    char_filters: int = setting(64, "character CNN filters (spelling features per word); 0 = no character features",
                                min=0)
    char_kernel: int = setting(3, "character CNN window, in characters", min=1)
    word_dropout: float = setting(0.5, "a training word seen n times reads as <unk> with probability word_dropout / n "
                                  "(teaches tagging unknown words)", min=0.0, max=1.0)
    label_smoothing: float = setting(0.1, "share of each target spread over all tags (curbs overconfidence)",
                                     min=0.0, max=1.0, high_open=True)


class Tagging(Task):
    """Sequence labeller; ``seqapp predict "The cat sat ."`` prints ``The/DET cat/NOUN sat/VERB ./PUNCT``."""

    name: ClassVar[str] = "tagging"
    summary: ClassVar[str] = "one tag per token (parts of speech, entities): bidirectional RNN + character CNN"
    DataConfig: ClassVar[type] = TaggingDataConfig
    ModelConfig: ClassVar[type] = TaggingModelConfig
    predict_options: ClassVar[tuple[PredictOption, ...]] = (JSON_OUTPUT,)
    preprocessing_fields: ClassVar[dict] = {
        "word_vocab": list_of(TEXT, least=len(SPECIALS)), "lower": FLAG, "char_vocab": nullable(list_of(TEXT)),
        "max_word_len": COUNT, "tags": list_of(TEXT, least=1), "calibration?": CALIBRATION_FIELDS}
    metrics_fields: ClassVar[dict] = {**split_metrics({"accuracy": METRIC, "unseen_accuracy": METRIC}),
                                      "baseline_most_frequent_tag?": baseline_metrics("accuracy")}
    tiny: ClassVar[dict] = {
        "set": ["model.units=8", "model.embedding_dim=8", "model.char_dim=4", "model.char_filters=8"],
        "inputs": ["I saw her duck .", "The cat sat on the mat."],
        "options": {},
    }
    calibrates: ClassVar[bool] = True

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Check the tag column and the split, and make held-out paths absolute.

        Absolute paths keep a run's ``config.yaml`` usable from any folder.
        """
        data = cfg.data
        if not (data.tag_column.isdigit() or data.tag_column in CONLLU_TAG_COLUMNS):
            raise SeqappError(f"data.tag_column={data.tag_column!r} is not allowed; use upos, xpos or a 0-based "
                              "column index")
        if data.val_fraction + data.test_fraction >= 0.9:
            raise SeqappError("data.val_fraction + data.test_fraction must be below 0.9; keep most data for training")
        if cfg.train.calibrate and not data.val_path and data.val_fraction == 0:
            raise SeqappError("train.calibrate fits its temperature on the validation split, and there is none "
                              "(data.val_fraction is 0); set data.val_fraction above 0 or give data.val_path")
        data.val_path = os.path.abspath(data.val_path) if data.val_path else None
        data.test_path = os.path.abspath(data.test_path) if data.test_path else None

    # -- data -------------------------------------------------------------------------
    def load_data(self, cfg: Config) -> Splits:
        """Tagged sentences: held-out files where named, else sentence splits of ``data.path``."""
        return load_splits(cfg.data)

    def fit_preprocessing(self, cfg: Config, splits: Splits) -> dict:
        """Word and character vocabularies from the training split, and the tag list."""
        data, model = cfg.data, cfg.model
        counts = Counter(word_key(token, data.lower) for tokens in splits.train.tokens for token in tokens)
        ranked = sorted((word for word, n in counts.items() if n >= data.min_count and word not in SPECIALS),
                        key=lambda word: (-counts[word], word))
        if data.max_vocab is not None:
            ranked = ranked[:data.max_vocab - len(SPECIALS)]
        words = [token for tokens in splits.train.tokens for token in tokens]
        char_vocab = Tokenizer("char").fit(words).vocab if model.char_filters else None
        return {
            "word_vocab": [*SPECIALS, *ranked],
            "lower": data.lower,
            "char_vocab": char_vocab,
            "max_word_len": data.max_word_len,
            "tags": sorted({tag for part in (splits.train, splits.val, splits.test) for tags in part.tags
                            for tag in tags}),
            "train_sentences": len(splits.train),
        }

    def datasets(self, cfg: Config, prep: dict, splits: Splits) -> tuple[Any, Any]:
        """Length-bucketed batches of (features, one-hot tags, weights); only training drops words."""
        batch_size, seed = cfg.train.batch_size, cfg.train.random_seed
        train = tagged_dataset(splits.train, prep, batch_size, shuffle=True, seed=seed,
                               word_dropout=cfg.model.word_dropout)
        val = tagged_dataset(splits.val, prep, batch_size, shuffle=False) if len(splits.val) else None
        return train, val

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        return tagger(prep, cfg.model)

    def objective(self, cfg: Config, prep: dict) -> Objective:
        """A padding-free loss and token accuracy (the datasets weigh padding 0).

        Label smoothing keeps the validation loss falling while accuracy still rises (without
        it the loss turns up early from overconfidence and early stopping cuts training short).
        """
        import keras

        return Objective(loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.model.label_smoothing),
                         weighted_metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])

    # -- evaluation -------------------------------------------------------------------
    def calibrate(self, run: Any, splits: Splits) -> dict | None:
        """The temperature that minimises the negative log-likelihood of the validation split's tokens."""
        if not splits.val.token_count():
            return None
        truth = tag_ids(splits.val.tags, run.preprocessing["tags"])
        return {"temperature": fit_temperature(np.concatenate(tag_logits(run, splits.val.tokens)), truth),
                "examples": len(truth)}

    def evaluate(self, run: Any, splits: Splits, engine: str = "tf", errors: int = 0) -> dict:
        """Token accuracy, per-tag scores, unseen-token accuracy (and entity F1 for BIO tags)
        on val and test, beside the most-frequent-tag baseline; ROC-AUC, PR-AUC (per tag
        one-vs-rest, macro), expected calibration error, Brier score and negative log-likelihood
        of the tag probabilities over all tokens, beside those of the training split's tag
        frequencies; with a temperature, the calibration error and log-likelihood before and after it;
        the ``errors`` sentences of the main split with the most wrong tags. Without a training split
        (new data whose run's own data cannot be read) the baselines are left out and a token is
        unseen when the run's word vocabulary lacks it."""
        tags, lower = run.preprocessing["tags"], run.preprocessing["lower"]
        baseline = MostFrequentTag(splits.train, tags, lower) if len(splits.train) else None
        knows = baseline.knows if baseline is not None else Encoder(run.preprocessing).knows
        scale = temperature(run.preprocessing)
        train_truth = tag_ids(splits.train.tags, tags)
        metrics: dict[str, Any] = {"tags": tags}
        self.scored: dict[Any, tuple] = {}  # for plots() of this run: the same probabilities, not computed twice
        worst: list[dict] = []
        for split, sentences in held_out(splits).items():
            check_tags(sentences, tags)
            unseen = np.asarray([not knows(token) for tokens in sentences.tokens for token in tokens])
            logits = tag_logits(run, sentences.tokens)
            probabilities = [scaled_probabilities(rows, scale) for rows in logits]
            predicted = [[tags[k] for k in rows.argmax(axis=-1)] for rows in probabilities]
            truth = tag_ids(sentences.tags, tags)
            flat = np.concatenate(probabilities)
            metrics[split] = {**tagging_scores(sentences, predicted, tags, unseen), **probability_scores(flat, truth)}
            if baseline is not None:
                guessed = [[baseline.tag(token) for token in tokens] for tokens in sentences.tokens]
                base = tagging_scores(sentences, guessed, tags, unseen)
                metrics.setdefault("baseline_most_frequent_tag", {})[split] = {
                    key: base[key] for key in ("accuracy", "unseen_accuracy", "macro_f1", "entities") if key in base}
                metrics.setdefault("baseline_tag_frequencies", {})[split] = probability_scores(
                    frequency_probabilities(train_truth, len(tags), len(truth)), truth)
            if scale != 1.0:
                metrics.setdefault("calibration", {"temperature": scale})[split] = calibration_change(
                    np.concatenate(logits), truth, scale)
            self.scored[run.path, split] = (flat, truth, np.concatenate(logits))
            if errors:
                worst = worst_sentences(sentences, predicted, probabilities, tags, errors)
        parts = {"test": splits.test} if splits.source else vars(splits)
        metrics["sentences"] = {name: len(part) for name, part in parts.items() if name != "source"}
        metrics["tokens"] = {name: part.token_count() for name, part in parts.items() if name != "source"}
        return {**metrics, "worst": worst} if errors else metrics

    def new_data(self, run: Any, path: Path) -> Splits:
        """The tagged sentences of ``path`` (CoNLL-U or columns, with the run's tag column) as the test
        split; the run's training split for the baselines and the unseen words."""
        data = run.config.data
        sentences = read_sentences(Path(path), data.format, data.tag_column)
        check_tags(sentences, run.preprocessing["tags"])
        train = training_part(self, run, "the most-frequent-tag baseline")
        return Splits(train=train if train is not None else Sentences([], [], []), val=Sentences([], [], []),
                      test=sentences, source=str(path))

    def format_worst(self, records: list[dict]) -> list[str]:
        return [f"{record['errors']} of {record['tokens']} tags wrong  {record['line']}: {record['tagged']}"
                for record in records]

    def headline(self, metrics: dict) -> str:
        """Main-split accuracy, unseen-token accuracy and the baseline's accuracy."""
        split = main_split(metrics)
        if split is None:
            return ""
        scores = metrics[split]
        base = metrics.get("baseline_most_frequent_tag", {}).get(split, {}).get("accuracy")
        base_text = f" (most-frequent-tag {base:.3f})" if base is not None else ""
        return (f"{split} accuracy {figure(scores['accuracy'], '.3f')}, "
                f"unseen words {figure(scores['unseen_accuracy'], '.3f')}{base_text}")

    def format_metrics(self, metrics: dict) -> list[str]:
        """Per split: accuracy, unseen-token accuracy, macro F1 (entity F1) and the baseline;
        then the per-tag table of the main split."""
        split = main_split(metrics)
        if split is None:
            return ["no held-out sentences to evaluate on"]
        lines = ["sentences: " + ", ".join(f"{name} {n}" for name, n in metrics.get("sentences", {}).items()),
                 "tokens:    " + ", ".join(f"{name} {n}" for name, n in metrics.get("tokens", {}).items())]
        for name in ("val", "test", "train"):
            if name in metrics:
                lines.append(f"{name:<5} {score_line(metrics[name])}   (unseen tokens: "
                             f"{metrics[name]['unseen_share']:.1%})")
                base = metrics.get("baseline_most_frequent_tag", {}).get(name)
                if base:
                    lines.append(f"      {score_line(base)}   most-frequent-tag baseline")
        lines.extend(probability_lines(metrics, metrics.get("baseline_tag_frequencies", {}), "tag frequencies"))
        lines.append("")
        lines.extend(class_table(metrics[split], metrics["tags"], split))
        return lines

    def plots(self, run: Any, splits: Splits, folder: Any) -> None:
        """The tag confusion matrix of the main held-out split as ``confusion_matrix.png``; the
        per-tag ROC and precision-recall curves and the reliability diagram of its tokens as
        ``roc.png``, ``pr.png`` and ``calibration.png``."""
        metrics = run.metrics or self.evaluate(run, splits)
        split = main_split(metrics)
        if split is None:
            return
        plot_confusion(metrics[split]["confusion_matrix"], metrics["tags"], split,
                       Path(folder) / "confusion_matrix.png")
        scored = getattr(self, "scored", {}).get((run.path, split))
        if scored is None:
            sentences = getattr(splits, split)
            logits = np.concatenate(tag_logits(run, sentences.tokens))
            scored = (scaled_probabilities(logits, temperature(run.preprocessing)),
                      tag_ids(sentences.tags, metrics["tags"]), logits)
        probability_plots(scored, metrics["tags"], split, temperature(run.preprocessing), Path(folder))

    def serving_module(self, run: Any) -> Any:
        """``seqapp export``: raw sentences in, tokens and tags out (see ``tagging_serving``)."""
        from seqapp.tasks.tagging_serving import TaggingServing

        return TaggingServing(run)

    # -- prediction -------------------------------------------------------------------
    def check_inputs(self, inputs: list[str], **opts: Any) -> None:
        if not inputs:
            raise SeqappError("no sentences to tag; give them as arguments, with --file FILE, or '-' to read stdin")

    def predict(self, run: Any, inputs: list[str], **opts: Any) -> Iterator[str]:
        """``token/TAG`` for each token of each input (split by :func:`split_tokens`), or
        with ``json`` one object per input, with each tag's probability; unknown words are
        reported as a warning."""
        self.check_inputs(inputs)
        token_lists = [split_tokens(text) for text in inputs]
        warn_unknown(run.preprocessing, token_lists)
        names = run.preprocessing["tags"]
        for text, tokens, probabilities in zip(inputs, token_lists, tag_probabilities(run, token_lists)):
            best = probabilities.argmax(axis=-1)
            tags = [names[k] for k in best]
            if opts.get("json"):
                chosen = probabilities[np.arange(len(best)), best]
                yield json.dumps({"text": text, "tokens": tokens, "tags": tags,
                                  "probabilities": [round(float(p), 6) for p in chosen]}, ensure_ascii=False)
            else:
                yield " ".join(f"{token}/{tag}" for token, tag in zip(tokens, tags))


# -- model --------------------------------------------------------------------------
def tagger(prep: dict, model_cfg: Any) -> Any:
    """Word embedding (+ character CNN) -> recurrent stack over the sentence -> tag softmax per token.

    The padding mask is handed to each recurrent layer explicitly: ``Concatenate`` would
    unmask padded steps (it keeps a step when any of its inputs does, and the spelling
    features carry no mask).
    """
    import keras

    words = keras.Input((None,), dtype="int32", name="words")
    tokens = keras.ops.not_equal(words, PAD_ID)
    inputs = {"words": words}
    x = keras.layers.Embedding(len(prep["word_vocab"]), model_cfg.embedding_dim, mask_zero=True,
                               name="word_embedding")(words)
    if prep["char_vocab"]:
        inputs["chars"] = keras.Input((None, prep["max_word_len"]), dtype="int32", name="chars")
        spelling = spelling_features(inputs["chars"], len(prep["char_vocab"]), model_cfg, prep["max_word_len"])
        x = keras.layers.Concatenate(name="word_and_spelling")([x, spelling])
    if model_cfg.dropout > 0:
        x = keras.layers.Dropout(model_cfg.dropout, name="input_dropout")(x)
    stack = recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                            bidirectional=model_cfg.bidirectional, return_sequences=True, name="encoder")
    for layer in stack:
        x = layer(x, mask=tokens) if is_recurrent(layer) else layer(x)
    probabilities = output_head(len(prep["tags"]), "softmax", name="tag_probabilities")(x)
    return keras.Model(inputs, probabilities, name="tagger")


def spelling_features(chars: Any, char_vocab_size: int, model_cfg: Any, width: int) -> Any:
    """One vector per word from its characters: embedding -> CNN along the word -> max over it."""
    import keras

    x = keras.layers.Embedding(char_vocab_size, model_cfg.char_dim, name="char_embedding")(chars)
    x = keras.layers.Conv2D(model_cfg.char_filters, (1, model_cfg.char_kernel), padding="same", activation="relu",
                            name="char_cnn")(x)  # (batch, words, chars, filters): a 1-wide kernel keeps words apart
    x = keras.layers.MaxPooling2D((1, width), name="char_max")(x)
    return keras.layers.Reshape((-1, model_cfg.char_filters), name="spelling")(x)


def predict_tags(run: Any, token_lists: list[list[str]]) -> list[list[str]]:
    """The most probable tag of every token, sentences batched by length."""
    tags = run.preprocessing["tags"]
    return [[tags[k] for k in rows.argmax(axis=-1)] for rows in tag_probabilities(run, token_lists)]


def tag_probabilities(run: Any, token_lists: list[list[str]]) -> list[np.ndarray]:
    """Per sentence a (tokens, tags) array of tag probabilities; a calibrated run's temperature
    divides the logits first."""
    scale = temperature(run.preprocessing)
    if scale != 1.0:
        return [scaled_probabilities(rows, scale) for rows in tag_logits(run, token_lists)]
    width = len(run.preprocessing["tags"])
    return [np.asarray(rows, np.float64) for rows in per_token(run, token_lists, run.model, width)]


def tag_logits(run: Any, token_lists: list[list[str]]) -> list[np.ndarray]:
    """Per sentence a (tokens, tags) float64 array of the output head's logits."""
    width = output_layer(run.model).kernel.shape[0]  # what the head reads per token
    features = per_token(run, token_lists, head_features(run.model), width)
    return [head_logits(run.model, rows) for rows in features]


def per_token(run: Any, token_lists: list[list[str]], model: Any, width: int) -> list[np.ndarray]:
    """``model``'s output at every token (per sentence a (tokens, width) array), sentences batched by length."""
    encoder = Encoder(run.preprocessing)
    order = sorted((i for i, tokens in enumerate(token_lists) if tokens), key=lambda i: len(token_lists[i]))
    found = [np.zeros((0, width), np.float32) for _ in token_lists]
    for start in range(0, len(order), PREDICT_BATCH_SIZE):
        batch = order[start:start + PREDICT_BATCH_SIZE]
        outputs = np.asarray(model.predict_on_batch(encoder.batch([token_lists[i] for i in batch])))
        for row, i in enumerate(batch):
            found[i] = outputs[row, :len(token_lists[i])]
    return found


def tag_ids(tag_lists: list[list[str]], tags: list[str]) -> np.ndarray:
    """The index in ``tags`` of every tag of every sentence, in one flat array (tags outside
    ``tags`` left out: :func:`check_tags` refuses them where they matter)."""
    index = {tag: i for i, tag in enumerate(tags)}
    return np.asarray([index[tag] for sentence in tag_lists for tag in sentence if tag in index], np.int64)


def warn_unknown(prep: dict, token_lists: list[list[str]]) -> None:
    """Log the words outside the run's vocabulary (tagged from spelling and context alone)."""
    encoder = Encoder(prep)
    unknown = dict.fromkeys(token for tokens in token_lists for token in tokens if not encoder.knows(token))
    if unknown:
        how = "spelling and context" if prep["char_vocab"] else "context"
        log.warning("unknown words, tagged from their %s: %s", how, " ".join(unknown))


# -- evaluation ---------------------------------------------------------------------
class MostFrequentTag:
    """The baseline: a known word's most frequent training tag; an unknown word is PROPN
    if capitalised, else NOUN (when the tag set has them), else the most frequent tag.

    Words are looked up the way the word vocabulary reads them (lower-cased with ``lower``),
    which also defines the tokens "unseen in training" that evaluation reports on.
    """

    def __init__(self, train: Sentences, tags: list[str], lower: bool) -> None:
        by_word: dict[str, Counter] = {}
        for tokens, token_tags in zip(train.tokens, train.tags):
            for token, tag in zip(tokens, token_tags):
                by_word.setdefault(word_key(token, lower), Counter())[tag] += 1
        self.table = {word: counts.most_common(1)[0][0] for word, counts in by_word.items()}
        overall = Counter(tag for token_tags in train.tags for tag in token_tags)
        self.fallback = overall.most_common(1)[0][0]
        self.tags = set(tags)
        self.lower = lower

    def knows(self, token: str) -> bool:
        """True when ``token`` occurs in the training split."""
        return word_key(token, self.lower) in self.table

    def tag(self, token: str) -> str:
        """The baseline's tag for ``token``."""
        if self.knows(token):
            return self.table[word_key(token, self.lower)]
        if token[:1].isupper() and "PROPN" in self.tags:
            return "PROPN"
        return "NOUN" if "NOUN" in self.tags else self.fallback


def tagging_scores(sentences: Sentences, predicted: list[list[str]], tags: list[str], unseen: np.ndarray) -> dict:
    """Accuracy, per-tag scores, macro F1, accuracy on and share of the ``unseen`` tokens (a
    flag per token); entity scores for BIO tags."""
    index = {tag: i for i, tag in enumerate(tags)}
    truth = np.asarray([index[tag] for sentence in sentences.tags for tag in sentence], np.int64)
    guess = np.asarray([index[tag] for sentence in predicted for tag in sentence], np.int64)
    scores = classification_metrics(truth, guess, tags)
    hits = truth[unseen] == guess[unseen]
    scores["unseen_accuracy"] = round(float(hits.mean()), 5) if len(hits) else 0.0
    scores["unseen_share"] = round(float(unseen.mean()), 5)
    if is_bio(tags):
        scores["entities"] = entity_scores(sentences.tags, predicted)
    return scores


def score_line(scores: dict) -> str:
    """Accuracy, unseen-token accuracy, macro F1 (and entity F1) on one line."""
    line = (f"accuracy {scores['accuracy']:.4f}  unseen {scores['unseen_accuracy']:.4f}  "
            f"macro F1 {scores['macro_f1']:.4f}")
    if "entities" in scores:
        line += f"  entity F1 {scores['entities']['f1']:.4f}"
    return line


def worst_sentences(sentences: Sentences, predicted: list[list[str]], probabilities: list[np.ndarray],
                    tags: list[str], count: int) -> list[dict]:
    """``evaluate --errors``: the ``count`` sentences with the most wrong tags (then the highest
    loss), worst first; each wrong token is shown as ``token/PREDICTED(TRUE)``."""
    index = {tag: i for i, tag in enumerate(tags)}
    found = []
    for truth, guess, rows in zip(sentences.tags, predicted, probabilities):
        wrong = sum(t != g for t, g in zip(truth, guess))
        chances = rows[np.arange(len(truth)), [index[tag] for tag in truth]]
        found.append((wrong, float(-np.log(np.maximum(chances, np.finfo(np.float64).tiny)).sum())))
    records = []
    for i in worst_first([wrong + loss / (1.0 + loss) for wrong, loss in found], count):
        tagged = " ".join(f"{token}/{guess}" if guess == truth else f"{token}/{guess}({truth})" for token, truth, guess
                          in zip(sentences.tokens[i], sentences.tags[i], predicted[i]))
        records.append({"line": sentences.sources[i], "errors": found[i][0], "tokens": len(sentences.tokens[i]),
                        "loss": round(found[i][1], 5), "tagged": tagged})
    return records


def check_tags(sentences: Sentences, tags: list[str]) -> None:
    """Refuse a held-out tag the run does not know (the error names the sentence)."""
    known = set(tags)
    for sentence_tags, where in zip(sentences.tags, sentences.sources):
        unknown = [tag for tag in sentence_tags if tag not in known]
        if unknown:
            raise SeqappError(f"sentence at {where}: tag '{unknown[0]}' is not one the run was trained with "
                              f"({', '.join(tags)}); train a new run on this data")
