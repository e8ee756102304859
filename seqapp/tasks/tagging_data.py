"""Tagged sentences for the tagging task: reading CoNLL-U and token<TAB>tag columns, and
turning tokens into model inputs (word ids, character ids, ``tf.data`` batches).

Both formats hold one token per line and a blank line between sentences. CoNLL-U lines
have ten tab-separated fields (``ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC``);
``#`` comment lines, multiword-token lines (ID ``3-4``) and empty nodes (ID ``8.1``) are
skipped, so each sentence is its plain words. Columnar files hold the token first and a
tag in another column (``token<TAB>tag``, or CoNLL-2003's space-separated columns).

Treebanks come pre-split, so held-out files can be named (``val_path``, ``test_path``);
whatever is not named is cut from ``data.path`` by sentence, with a fixed seed. The
tokenizer for new text (:func:`split_tokens`) follows the treebanks' conventions.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from seqapp import datafiles
from seqapp.errors import SeqappError
from seqapp.tasks.base import Splits
from seqapp.text import OOV_ID, PAD_ID, Tokenizer

DEFAULT_DATA = "tagging.tsv"
# Training batches group sentences up to these lengths (in tokens), to pad little.
LENGTH_BUCKETS = [8, 12, 16, 20, 25, 30, 40, 60]
CONLLU_FIELDS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")
CONLLU_TAG_COLUMNS = {"upos": 3, "xpos": 4}
CONLLU_ID = re.compile(r"\d+(?:[-.]\d+)?")

# Treebank-style tokens: clitics split off (did n't, John 's), periods kept in titles and
# abbreviations (Dr., U.S.), inner marks kept in numbers (3.5, 1,000, 9:30), any other mark alone.
TOKEN_PATTERN = re.compile(
    r"\w+(?=n['’]t\b)|n['’]t\b|['’](?:s|re|ve|ll|d|m)\b|(?:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr)\.|(?:[^\W\d_]\.){2,}"
    r"|\d+(?:[.,:]\d+)+|\w+|[^\w\s]",
    re.IGNORECASE,
)


@dataclass
class Sentences:
    """Tokenized sentences with one tag per token, and the ``file:line`` each starts at."""

    tokens: list[list[str]]
    tags: list[list[str]]
    sources: list[str]

    def __len__(self) -> int:
        return len(self.tokens)

    def subset(self, indices: Any) -> Sentences:
        """The sentences at ``indices``, in that order."""
        return Sentences([self.tokens[i] for i in indices], [self.tags[i] for i in indices],
                         [self.sources[i] for i in indices])

    def token_count(self) -> int:
        """Number of tokens in all sentences."""
        return sum(len(tokens) for tokens in self.tokens)


def split_tokens(text: str) -> list[str]:
    """Tokens of a raw sentence, the way treebanks split English text.

    Punctuation marks stand alone, clitics are split off (``didn't`` -> ``did n't``,
    ``Anna's`` -> ``Anna 's``), hyphens separate (``e-mail`` -> ``e - mail``), while titles,
    abbreviations and numbers keep their marks (``Dr.``, ``U.S.``, ``3.5``, ``1,000``).
    Text that is already tokenized (tokens between spaces) comes back unchanged.
    """
    return TOKEN_PATTERN.findall(text)


# -- splits -----------------------------------------------------------------------------
def load_splits(data: Any) -> Splits:
    """Train / val / test sentences: named held-out files, or sentence splits of ``data.path``.

    Each of ``val_path`` and ``test_path`` replaces its own fraction; the rest of the
    sentences of ``data.path`` (shuffled with ``split_seed``, file order kept) train.
    """
    path = Path(data.path) if data.path else datafiles.bundled(DEFAULT_DATA)
    sentences = read_sentences(path, data.format, data.tag_column)
    n_test = 0 if data.test_path else round(len(sentences) * data.test_fraction)
    n_val = 0 if data.val_path else round(len(sentences) * data.val_fraction)
    if n_test + n_val >= len(sentences):
        raise SeqappError(f"{path.name} has only {len(sentences)} sentence(s), too few to hold out "
                          f"{n_val} for validation and {n_test} for test; give more sentences, lower "
                          "data.val_fraction / data.test_fraction, or name data.val_path / data.test_path")
    order = np.random.default_rng(data.split_seed).permutation(len(sentences))
    test = order[:n_test]
    val = order[n_test:n_test + n_val]
    train = order[n_test + n_val:]
    return Splits(
        train=sentences.subset(sorted(train)),
        val=read_sentences(Path(data.val_path), data.format, data.tag_column) if data.val_path
        else sentences.subset(sorted(val)),
        test=read_sentences(Path(data.test_path), data.format, data.tag_column) if data.test_path
        else sentences.subset(sorted(test)),
    )


# -- reading ----------------------------------------------------------------------------
def read_sentences(path: Path, fmt: str, tag_column: str) -> Sentences:
    """The tagged sentences of one CoNLL-U or columnar file (``fmt``: auto, conllu, columns)."""
    text = datafiles.read_text(path)
    if fmt == "auto":
        fmt = detect_format(path, text)
    parse_line = conllu_token if fmt == "conllu" else column_token
    tag_at = tag_index(tag_column, fmt)
    sentences = Sentences([], [], [])
    tokens: list[str] = []
    tags: list[str] = []
    start = ""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if tokens:
                sentences.tokens.append(tokens)
                sentences.tags.append(tags)
                sentences.sources.append(start)
            tokens, tags = [], []
            continue
        token = parse_line(line, f"{path.name}:{number}", tag_at)
        if token is not None:
            start = start if tokens else f"{path.name}:{number}"
            tokens.append(token[0])
            tags.append(token[1])
    if tokens:
        sentences.tokens.append(tokens)
        sentences.tags.append(tags)
        sentences.sources.append(start)
    if not sentences.tokens:
        raise SeqappError(f"data file {path} has no tagged tokens; write one 'token<TAB>tag' per line "
                          "(or CoNLL-U), with a blank line between sentences")
    return sentences


def detect_format(path: Path, text: str) -> str:
    """``conllu`` for a ``.conllu`` file or one whose first token line has ten fields and an ID."""
    if path.suffix.lower() == ".conllu":
        return "conllu"
    for line in text.split("\n"):
        if line.strip() and not line.startswith("#"):
            fields = line.rstrip("\r").split("\t")
            return "conllu" if len(fields) == len(CONLLU_FIELDS) and CONLLU_ID.fullmatch(fields[0]) else "columns"
    return "columns"


def tag_index(tag_column: str, fmt: str) -> int | None:
    """0-based index of the tag column; None means a columnar file's last column."""
    if tag_column.isdigit():
        return int(tag_column)
    return CONLLU_TAG_COLUMNS[tag_column] if fmt == "conllu" else None


def conllu_token(line: str, where: str, tag_at: int | None) -> tuple[str, str] | None:
    """(form, tag) of a CoNLL-U word line; None for comments, multiword tokens and empty nodes."""
    if line.startswith("#"):
        return None
    fields = line.split("\t")
    if len(fields) != len(CONLLU_FIELDS):
        raise SeqappError(f"{where} has {len(fields)} tab-separated field(s) but CoNLL-U needs 10 "
                          f"({' '.join(CONLLU_FIELDS)}); separate the fields with tabs, or set "
                          "data.format=columns for a token<TAB>tag file")
    word_id = fields[0]
    if "-" in word_id or "." in word_id:
        return None
    if not word_id.isdigit():
        raise SeqappError(f"{where}: ID '{word_id}' is not a word number; CoNLL-U word lines start with 1, 2, 3, ...")
    return checked_token(fields[1], fields[tag_at], where, f"the {CONLLU_FIELDS[tag_at]} column")


def column_token(line: str, where: str, tag_at: int | None) -> tuple[str, str] | None:
    """(token, tag) of a columnar line (tab-separated, or space-separated without tabs)."""
    if line.startswith("-DOCSTART-"):  # CoNLL-2003 document separators
        return None
    fields = line.split("\t") if "\t" in line else line.split()
    if len(fields) < 2:
        raise SeqappError(f"{where}: expected a token and its tag separated by a tab, got {line.strip()!r}; "
                          "write 'token<TAB>tag' with a blank line between sentences")
    at = len(fields) - 1 if tag_at is None else tag_at
    if at >= len(fields):
        raise SeqappError(f"{where} has {len(fields)} column(s), so data.tag_column={tag_at} does not exist; "
                          "set data.tag_column to a 0-based column index of the tags")
    return checked_token(fields[0], fields[at], where, f"column {at}")


def checked_token(token: str, tag: str, where: str, column: str) -> tuple[str, str]:
    """``(token, tag)`` stripped, or a SeqappError when either is missing."""
    token, tag = token.strip(), tag.strip()
    if not token:
        raise SeqappError(f"{where}: the token is empty; write the word in the first column (FORM in CoNLL-U)")
    if not tag or tag == "_":
        raise SeqappError(f"{where}: no tag in {column} (got {tag!r}); tag the token or pick another "
                          "column with data.tag_column")
    return token, tag


# -- features -----------------------------------------------------------------------
def word_key(token: str, lower: bool) -> str:
    """The form a token takes in the word vocabulary."""
    return token.lower() if lower else token


class Encoder:
    """Turns tokens into the model's inputs, from a run's preprocessing."""

    def __init__(self, prep: dict) -> None:
        self.lower = prep["lower"]
        self.word_index = {word: i for i, word in enumerate(prep["word_vocab"])}
        self.chars = Tokenizer("char", vocab=prep["char_vocab"]) if prep["char_vocab"] else None
        self.width = prep["max_word_len"]

    def knows(self, token: str) -> bool:
        """True when ``token`` has its own word embedding (it is in the run's word vocabulary)."""
        return word_key(token, self.lower) in self.word_index

    def word_ids(self, tokens: list[str]) -> np.ndarray:
        """Vocabulary ids of ``tokens`` (unknown words: the ``<unk>`` id)."""
        return np.asarray([self.word_index.get(word_key(token, self.lower), OOV_ID) for token in tokens], np.int32)

    def char_ids(self, tokens: list[str]) -> np.ndarray:
        """A (tokens, max_word_len) array of character ids, each word framed by <s> and </s>.

        A longer word keeps its start and its end (where prefixes and suffixes are), so every
        word has the same width whatever else is in the batch.
        """
        rows = np.full((len(tokens), self.width), PAD_ID, np.int32)
        for row, token in enumerate(tokens):
            ids = self.chars.encode(token, add_start=True, add_end=True)
            if len(ids) > self.width:
                ids = ids[:self.width // 2] + ids[len(ids) - (self.width - self.width // 2):]
            rows[row, :len(ids)] = ids
        return rows

    def features(self, tokens: list[str]) -> dict[str, np.ndarray]:
        """Unpadded inputs of a run of tokens: ``words`` and, with character features, ``chars``."""
        features = {"words": self.word_ids(tokens)}
        if self.chars is not None:
            features["chars"] = self.char_ids(tokens)
        return features

    def batch(self, token_lists: list[list[str]]) -> dict[str, np.ndarray]:
        """Inputs for a batch of sentences, padded after each sentence to the longest one."""
        steps = max(len(tokens) for tokens in token_lists)
        padded: dict[str, np.ndarray] = {}
        for row, tokens in enumerate(token_lists):
            for name, values in self.features(tokens).items():
                if name not in padded:
                    padded[name] = np.full((len(token_lists), steps, *values.shape[1:]), PAD_ID, np.int32)
                padded[name][row, :len(tokens)] = values
        return padded


def tagged_dataset(sentences: Sentences, prep: dict, batch_size: int, shuffle: bool, seed: int = 0,
                   word_dropout: float = 0.0) -> Any:
    """A ``tf.data`` pipeline of (features, one-hot tags, weights) batches of similar-length sentences.

    Weights are 1 on tokens and 0 on padding, so the loss and the accuracy skip padding.
    """
    import tensorflow as tf

    from seqapp.pipeline import shuffled

    lengths = [len(tokens) for tokens in sentences.tokens]
    tokens = [token for sentence in sentences.tokens for token in sentence]
    features = Encoder(prep).features(tokens)
    if word_dropout > 0:
        features["drop_probability"] = drop_probabilities(tokens, prep["lower"], word_dropout)
    tag_index = {tag: i for i, tag in enumerate(prep["tags"])}
    flat_tags = np.asarray([tag_index[tag] for tags in sentences.tags for tag in tags], np.int32)
    ragged = {name: tf.RaggedTensor.from_row_lengths(values, lengths) for name, values in features.items()}
    sentences_and_tags = (ragged, tf.RaggedTensor.from_row_lengths(flat_tags, lengths))
    if shuffle:
        dataset = shuffled(sentences_and_tags, len(lengths), seed)
    else:
        dataset = tf.data.Dataset.from_tensor_slices(sentences_and_tags)
    dataset = dataset.map(functools.partial(dense_sentence, seed=seed))
    batch_sizes = [batch_size] * (len(LENGTH_BUCKETS) + 1)
    dataset = dataset.bucket_by_sequence_length(sentence_length, LENGTH_BUCKETS, batch_sizes)
    # Each bucket ends with one partial batch; telling Keras the count gives it epoch lengths.
    per_bucket = np.bincount(np.digitize(lengths, LENGTH_BUCKETS), minlength=len(batch_sizes))
    batches = int(sum(-(-count // batch_size) for count in per_bucket))
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    dataset = dataset.map(functools.partial(training_targets, tag_count=len(tag_index)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def drop_probabilities(tokens: list[str], lower: bool, word_dropout: float) -> np.ndarray:
    """How likely each training token is read as ``<unk>``: ``word_dropout / n`` for a word seen
    ``n`` times, so rare words, the ones most like unseen words, stand in for them."""
    keys = [word_key(token, lower) for token in tokens]
    counts = Counter(keys)
    return np.asarray([min(1.0, word_dropout / counts[key]) for key in keys], np.float32)


def dense_sentence(features: dict, tags: Any, seed: int) -> tuple[dict, Any]:
    """One sentence as plain tensors; with drop probabilities, some words become ``<unk>``
    (drawn anew each epoch)."""
    import tensorflow as tf

    features = dict(features)
    drop_probability = features.pop("drop_probability", None)
    if drop_probability is not None:
        dropped = tf.random.uniform(tf.shape(drop_probability), seed=seed) < drop_probability
        features["words"] = tf.where(dropped, tf.constant(OOV_ID, tf.int32), features["words"])
    return features, tags


def sentence_length(features: dict, tags: Any) -> Any:
    """Number of tokens of one sentence (for bucketing)."""
    import tensorflow as tf

    return tf.shape(tags)[0]


def training_targets(features: dict, tags: Any, tag_count: int) -> tuple[dict, Any, Any]:
    """One-hot tags (for label smoothing) and sample weights: 1 on tokens, 0 on padding."""
    import tensorflow as tf

    return features, tf.one_hot(tags, tag_count), tf.cast(features["words"] != PAD_ID, tf.float32)
