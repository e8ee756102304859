"""Shared tokenizer and padding helpers for every text task.

A :class:`Tokenizer` splits text into characters or words, maps tokens to ids with four
reserved ids (padding 0, out-of-vocabulary 1, start 2, end 3), limits the vocabulary by
frequency, and saves itself as plain JSON inside the run's ``preprocessing.json``.

Why not Keras's ``TextVectorization`` / ``StringLookup``: their vocabulary lives in
TensorFlow layer state, so reading it needs TensorFlow and a saved model; seqapp keeps
the vocabulary in JSON beside the model (readable and checkable without loading the
network), needs token-level *decoding* for generation and translation, and needs to
report which seed characters are unknown. The lookup itself is a dict; padding and
truncation use Keras's own ``keras.utils.pad_sequences``.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD, OOV, START, END = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, OOV, START, END)
PAD_ID, OOV_ID, START_ID, END_ID = range(4)

# Words (with inner apostrophes), single punctuation marks, and line breaks are tokens.
WORD_PATTERN = re.compile(r"\n|\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
PUNCTUATION_PATTERN = re.compile(f"[{re.escape(string.punctuation)}¡¿«»“”‘’…]")
NO_SPACE_BEFORE = set(".,!?;:%)]}…»") | {"'s", "n't"}
NO_SPACE_AFTER = set("([{«¿¡\n")


class Tokenizer:
    """Character- or word-level tokenizer with reserved special ids."""

    def __init__(
        self,
        level: str = "char",
        vocab: Sequence[str] | None = None,
        lower: bool = False,
        strip_punctuation: bool = False,
    ) -> None:
        if level not in ("char", "word"):
            raise ValueError(f"level must be 'char' or 'word', not {level!r}")
        self.level = level
        self.lower = lower
        self.strip_punctuation = strip_punctuation
        self.vocab: list[str] = list(SPECIALS)
        if vocab is not None:
            self.vocab = list(SPECIALS) + [token for token in vocab if token not in SPECIALS]
        self.index = {token: i for i, token in enumerate(self.vocab)}

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def vocab_size(self) -> int:
        """Number of ids, the four specials included."""
        return len(self.vocab)

    def standardize(self, text: str) -> str:
        """Apply the configured lower-casing and punctuation stripping."""
        if self.lower:
            text = text.lower()
        if self.strip_punctuation:
            text = PUNCTUATION_PATTERN.sub(" ", text)
        return text

    def split(self, text: str) -> list[str]:
        """Tokens of ``text``: characters, or words and punctuation marks."""
        text = self.standardize(text)
        return list(text) if self.level == "char" else WORD_PATTERN.findall(text)

    def fit(self, texts: Iterable[str], max_size: int | None = None, min_count: int = 1) -> Tokenizer:
        """Build the vocabulary from ``texts``: most frequent first, ties alphabetical.

        ``max_size`` caps the vocabulary including the four special tokens.
        """
        counts = Counter()
        for text in texts:
            counts.update(self.split(text))
        ranked = sorted((token for token, n in counts.items() if n >= min_count and token not in SPECIALS),
                        key=lambda token: (-counts[token], token))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        self.vocab = list(SPECIALS) + ranked
        self.index = {token: i for i, token in enumerate(self.vocab)}
        return self

    def encode(self, text: str, add_start: bool = False, add_end: bool = False) -> list[int]:
        """Ids of ``text``; unknown tokens become the OOV id."""
        ids = [self.index.get(token, OOV_ID) for token in self.split(text)]
        return ([START_ID] if add_start else []) + ids + ([END_ID] if add_end else [])

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int32 NumPy array (for long corpora)."""
        return np.fromiter((self.index.get(token, OOV_ID) for token in self.split(text)), dtype=np.int32)

    def unknown_tokens(self, text: str) -> list[str]:
        """Distinct tokens of ``text`` that are not in the vocabulary, in order of appearance."""
        return list(dict.fromkeys(token for token in self.split(text) if token not in self.index))

    def tokens(self, ids: Iterable[int], skip_special: bool = True) -> list[str]:
        """Tokens for ``ids``; special tokens dropped unless ``skip_special`` is False.

        Decoding stops at the first end token when ``skip_special`` is True.
        """
        out = []
        for i in ids:
            i = int(i)
            if skip_special and i == END_ID:
                break
            if skip_special and i < len(SPECIALS):
                continue
            out.append(self.vocab[i] if 0 <= i < len(self.vocab) else OOV)
        return out

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text for ``ids``: characters joined, or words detokenized."""
        return self.join(self.tokens(ids, skip_special))

    def join(self, tokens: Sequence[str]) -> str:
        """Join tokens back into text (word level: no space before punctuation)."""
        if self.level == "char":
            return "".join(tokens)
        pieces: list[str] = []
        for token in tokens:
            glue = pieces and pieces[-1][-1:] not in NO_SPACE_AFTER and token not in NO_SPACE_BEFORE
            glue = glue and token != "\n"
            pieces.append((" " if glue else "") + token)
        return "".join(pieces)

    def piece(self, previous: str | None, token: str) -> str:
        """The text ``token`` adds after token ``previous`` (for streaming output)."""
        if self.level == "char" or previous is None:
            return token
        return self.join([previous, token])[len(self.join([previous])):]

    def to_dict(self) -> dict:
        """JSON-ready description (saved in ``preprocessing.json``)."""
        return {
            "level": self.level,
            "lower": self.lower,
            "strip_punctuation": self.strip_punctuation,
            "vocab": self.vocab,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Rebuild a tokenizer saved with :meth:`to_dict`."""
        tok = cls(data["level"], lower=data.get("lower", False), strip_punctuation=data.get("strip_punctuation", False))
        tok.vocab = list(data["vocab"])
        tok.index = {token: i for i, token in enumerate(tok.vocab)}
        return tok


def pad(sequences: Sequence[Sequence[int]], max_len: int | None = None, side: str = "post") -> np.ndarray:
    """Pad (with id 0) and truncate id lists to one int32 array (``side``: where both happen).

    Plain numpy, as Keras's ``pad_sequences`` does it, so the fast inference path never
    imports Keras.
    """
    rows = [list(row) for row in sequences]
    width = max_len if max_len is not None else max((len(row) for row in rows), default=0)
    out = np.full((len(rows), width), PAD_ID, np.int32)
    for i, row in enumerate(rows):
        row = (row[:width] if side == "post" else row[-width:]) if width else []
        if row:
            if side == "post":
                out[i, : len(row)] = row
            else:
                out[i, width - len(row):] = row
    return out
