"""The tokenizers of :mod:`seqapp.text` and of the tagging task, as TensorFlow string ops.

An exported model (``seqapp export``) takes raw text, so its graph must split and look up
tokens exactly as seqapp's Python code does: :class:`seqapp.text.Tokenizer` (lower-casing,
punctuation stripping, characters or ``WORD_PATTERN`` words) and the tagging task's
treebank splitter (``tagging_data.TOKEN_PATTERN``). TensorFlow's regular expressions are
RE2, which differs from Python's ``re`` in three ways that matter here, each handled:

* RE2 has no ``findall``: every match is wrapped in a separator character with
  ``regex_replace``, the text is split on it, and the matches are the odd pieces.
* RE2's ``\\w``, ``\\s`` and ``\\b`` are ASCII only: words are ``[\\pL\\pN_]`` and
  whitespace the exact set of characters Python's ``str.isspace`` accepts.
* RE2 has no lookahead: the treebank splitter's ``\\w+(?=n't\\b)`` and ``\\b`` after a
  clitic (``'s``, ``n't``) become marking passes that consume the next character and
  write it back, before the main split.

The separator and markers are control characters \\x00-\\x03; an input that holds one
reads it as U+FFFD (tf.strings.lower would also drop a NUL). Characters added to Unicode
after the version Python was built with may be classified differently. The tests compare
these ops with the Python tokenizers on tricky texts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from seqapp.text import NO_SPACE_AFTER, NO_SPACE_BEFORE, OOV_ID, PUNCTUATION_PATTERN

SEPARATOR, OPEN, CLOSE = "\x01", "\x02", "\x03"
CONTROLS = "[\x00-\x03]"  # separator and markers; never left in the input
WORD = r"\pL\pN_"  # Python's Unicode \w
# Python's Unicode \s (str.isspace): RE2's \pZ plus the ASCII and C1 control separators
SPACE_CLASS = r"\t\n\x0b\x0c\r\x1c-\x1f\x85\pZ"
# text.WORD_PATTERN, r"\n|\w+(?:['’]\w+)*|[^\w\s]", in RE2
WORD_RE2 = rf"\n|[{WORD}]+(?:['’][{WORD}]+)*|[^{WORD}{SPACE_CLASS}]"

# tagging_data.TOKEN_PATTERN in RE2, after the marking passes (a marked token comes first)
CLITIC_RE2 = rf"(?i)(['’](?:s|re|ve|ll|d|m))([^{WORD}{CLOSE}]|$)"  # 's\b: mark it, keep what follows
NEGATION_RE2 = rf"(?i)([{WORD}]?)(n['’]t)([^{WORD}]|$)"  # n't\b: split from its word and mark it
TREEBANK_RE2 = (rf"{OPEN}[^{CLOSE}]*{CLOSE}|(?i:Mr|Mrs|Ms|Dr|Prof|St|Jr|Sr)\.|(?:[\pL\p{{Nl}}\p{{No}}]\.){{2,}}"
                rf"|\p{{Nd}}+(?:[.,:]\p{{Nd}}+)+|[{WORD}]+|[^{WORD}{SPACE_CLASS}]")


def re2_class(chars: Iterable[str]) -> str:
    """An RE2 character class of exactly ``chars`` (ASCII marks escaped, a line break as \\n)."""
    escaped = [r"\n" if char == "\n" else "\\" + char if char.isascii() and not char.isalnum() else char
               for char in chars]
    return "[" + "".join(escaped) + "]"


def punctuation_re2() -> str:
    """``text.PUNCTUATION_PATTERN`` in RE2: the same characters (read from the Python pattern)."""
    return re2_class(re.sub(r"\\(.)", r"\1", PUNCTUATION_PATTERN.pattern[1:-1]))


def clean(texts: Any) -> Any:
    """``texts`` with the separator and marker characters replaced by U+FFFD."""
    import tensorflow as tf

    return tf.strings.regex_replace(texts, CONTROLS, "\ufffd")


def findall(texts: Any, pattern: str) -> Any:
    """A ragged ``[N, (tokens)]`` string tensor: the matches of RE2 ``pattern`` in each text,
    as Python's ``re.findall`` gives them (``pattern`` never matches the empty string)."""
    import tensorflow as tf

    marked = tf.strings.regex_replace(texts, pattern, SEPARATOR + r"\0" + SEPARATOR)
    pieces = tf.strings.split(marked, sep=SEPARATOR)
    positions = tf.ragged.range(pieces.row_lengths())
    return tf.ragged.boolean_mask(pieces, positions % 2 == 1)


def tokenizer_tokens(texts: Any, tokenizer: dict) -> Any:
    """``Tokenizer.split`` of each text (``tokenizer``: its ``to_dict``), as a ragged tensor."""
    import tensorflow as tf

    texts = clean(texts)
    if tokenizer.get("lower"):
        texts = tf.strings.lower(texts, encoding="utf-8")
    if tokenizer.get("strip_punctuation"):
        texts = tf.strings.regex_replace(texts, punctuation_re2(), " ")
    if tokenizer["level"] == "char":
        return tf.strings.unicode_split(texts, "UTF-8")
    return findall(texts, WORD_RE2)


def treebank_tokens(texts: Any) -> Any:
    """``tagging_data.split_tokens`` of each text, as a ragged tensor of tokens.

    Clitics are marked twice, because a marking pass consumes the character after a
    clitic, which may begin the next one (``'s's``); a marked clitic is never marked again.
    """
    import tensorflow as tf

    texts = clean(texts)
    for _ in range(2):
        texts = tf.strings.regex_replace(texts, CLITIC_RE2, rf"{OPEN}\1{CLOSE}\2")
    texts = tf.strings.regex_replace(texts, NEGATION_RE2, rf"\1 {OPEN}\2{CLOSE}\3")
    tokens = findall(texts, TREEBANK_RE2)
    return tf.strings.regex_replace(tokens, f"[{OPEN}{CLOSE}]", "")


def lookup_table(vocab: list[str], default: int = OOV_ID) -> Any:
    """A ``StaticHashTable`` from token to its id (its index in ``vocab``), ``default`` otherwise.

    The vocabulary is baked into the graph as constants rather than read from a text
    file, because tokens may be line breaks or tabs, which one-token-per-line files cannot hold.
    """
    import tensorflow as tf

    initializer = tf.lookup.KeyValueTensorInitializer(
        tf.constant(vocab, tf.string), tf.range(len(vocab), dtype=tf.int64))
    return tf.lookup.StaticHashTable(initializer, default_value=default)


def encode(tokens: Any, table: Any) -> Any:
    """Ids (int32) of a ragged tensor of tokens (of any ragged rank)."""
    import tensorflow as tf

    return tf.ragged.map_flat_values(lambda flat: tf.cast(table.lookup(flat), tf.int32), tokens)


def space_before(vocab: list[str]) -> list[bool]:
    """Per id: may ``Tokenizer.join`` put a space before the token (not before punctuation)."""
    return [token not in NO_SPACE_BEFORE and token != "\n" for token in vocab]


def space_after(tokens: Any) -> Any:
    """For string tokens: True unless the token ends in a character no space follows."""
    import tensorflow as tf

    return tf.logical_not(tf.strings.regex_full_match(tokens, "(?s).*" + re2_class(sorted(NO_SPACE_AFTER))))
