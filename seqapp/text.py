"""Shared tokenizer and padding helpers for every text task.

A :class:`Tokenizer` splits text into characters, words or subwords, maps tokens to ids
with four reserved ids (padding 0, out-of-vocabulary 1, start 2, end 3), limits the
vocabulary by frequency (or, for subwords, to a size), and saves itself as plain JSON
inside the run's ``preprocessing.json``.

Subwords are SentencePiece's (unigram or BPE), trained on the training split only. The
SentencePiece model is made so that its ids *are* seqapp's ids (its pad / unk / bos / eos
are 0-3 with seqapp's names), with identity normalization, whitespace kept as it is and
byte fallback, so that ``decode(encode(text))`` gives the standardized text back exactly
(one exception: the character U+2581, SentencePiece's space marker, reads as a space).
Its model file travels inside the JSON (base64), so every place that rebuilds a
tokenizer from a run works unchanged; ``sentencepiece`` never imports TensorFlow.

Why not Keras's ``TextVectorization`` / ``StringLookup``: their vocabulary lives in
TensorFlow layer state, so reading it needs TensorFlow and a saved model; seqapp keeps
the vocabulary in JSON beside the model (readable and checkable without loading the
network), needs token-level *decoding* for generation and translation, and needs to
report which seed characters are unknown. The lookup itself is a dict; padding and
truncation use Keras's own ``keras.utils.pad_sequences``.
"""

from __future__ import annotations

import base64
import logging
import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from seqapp.errors import SeqappError

log = logging.getLogger("seqapp")

PAD, OOV, START, END = "<pad>", "<unk>", "<s>", "</s>"
SPECIALS = (PAD, OOV, START, END)
PAD_ID, OOV_ID, START_ID, END_ID = range(4)

# Words (with inner apostrophes), single punctuation marks, and line breaks are tokens.
WORD_PATTERN = re.compile(r"\n|\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
PUNCTUATION_PATTERN = re.compile(f"[{re.escape(string.punctuation)}¡¿«»“”‘’…]")
NO_SPACE_BEFORE = set(".,!?;:%)]}…»") | {"'s", "n't"}
NO_SPACE_AFTER = set("([{«¿¡\n")
LEVELS = ("char", "word", "subword")
SUBWORD_MODELS = ("unigram", "bpe")
# data.vocab_size and data.subword_model of the text tasks (their setting() help, in one place)
SUBWORD_VOCAB_SIZE = 4000
SUBWORD_VOCAB_RANGE = {"min": 300, "max": 1_000_000}
SUBWORD_VOCAB_HELP = ("subword vocabulary size at level subword (data.max_vocab is for char and word): "
                      "SentencePiece pieces, the 4 specials and 256 byte pieces included; the most kept: a text "
                      "that cannot make so many gets fewer (one line at training says how many)")
SUBWORD_MODEL_HELP = "SentencePiece's algorithm at level subword: a unigram language model, or byte-pair encoding"
SPACE_MARK = "\u2581"  # how SentencePiece writes a space inside a piece
BYTE_PIECE = re.compile(r"<0x[0-9A-F]{2}>")


class Tokenizer:
    """Character-, word- or subword-level tokenizer with reserved special ids."""

    def __init__(
        self,
        level: str = "char",
        vocab: Sequence[str] | None = None,
        lower: bool = False,
        strip_punctuation: bool = False,
        subword_model: str = "unigram",
    ) -> None:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
        if subword_model not in SUBWORD_MODELS:
            raise ValueError(f"subword_model must be one of {SUBWORD_MODELS}, not {subword_model!r}")
        self.level = level
        self.lower = lower
        self.strip_punctuation = strip_punctuation
        self.subword_model = subword_model
        self.model_proto: bytes | None = None  # the trained SentencePiece model (level subword)
        self._processor: Any = None
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
        """Tokens of ``text``: characters, words and punctuation marks, or subword pieces."""
        text = self.standardize(text)
        if self.level == "subword":
            return self.processor.encode(text, out_type=str)
        return list(text) if self.level == "char" else WORD_PATTERN.findall(text)

    @property
    def processor(self) -> Any:
        """The SentencePiece processor of a subword tokenizer (loaded once)."""
        if self._processor is None:
            import sentencepiece

            processor = sentencepiece.SentencePieceProcessor()
            try:
                processor.LoadFromSerializedProto(self.model_proto or b"")
            except (RuntimeError, OSError):
                processor = None
            if processor is None or processor.vocab_size() != len(self.vocab):
                raise SeqappError("the run's SentencePiece model (tokenizer field 'sentencepiece') is damaged "
                                  "or does not match its vocabulary; train the run again")
            self._processor = processor
        return self._processor

    def fit(self, texts: Iterable[str], max_size: int | None = None, min_count: int = 1,
            name: str = "subword vocabulary") -> Tokenizer:
        """Build the vocabulary from ``texts``: most frequent first, ties alphabetical.

        ``max_size`` caps the vocabulary including the four special tokens; at subword
        level it caps the SentencePiece vocabulary too (``min_count`` unused; ``name`` starts
        the line logged when the text makes fewer pieces).
        """
        if self.level == "subword":
            return self.fit_subword([self.standardize(text) for text in texts], max_size, name)
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

    def fit_subword(self, texts: list[str], vocab_size: int | None, name: str = "subword vocabulary") -> Tokenizer:
        """Train the SentencePiece model on the (standardized) ``texts``, at most ``vocab_size`` pieces in all.

        Deterministic: one thread, every sentence read in order, no sampling. A line break
        is a piece of its own when the texts have one (SentencePiece reads lines). A text
        that cannot make ``vocab_size`` pieces gets all it can make (SentencePiece's soft
        limit, unigram and BPE alike) and one info line on the ``seqapp`` logger says so; a
        ``vocab_size`` below what the text's characters need is an error.
        """
        import io

        import sentencepiece

        if vocab_size is None:
            raise ValueError("a subword tokenizer needs a vocabulary size")
        lines = [line for text in texts for line in text.split("\n") if line]
        if not lines:
            raise SeqappError("the training texts are empty; a subword vocabulary needs some text")
        model = io.BytesIO()
        try:
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
                model_type=self.subword_model, pad_id=PAD_ID, unk_id=OOV_ID, bos_id=START_ID, eos_id=END_ID,
                pad_piece=PAD, unk_piece=OOV, bos_piece=START, eos_piece=END,
                user_defined_symbols=["\n"] if any("\n" in text for text in texts) else [],
                normalization_rule_name="identity", remove_extra_whitespaces=False, byte_fallback=True,
                character_coverage=1.0, max_sentence_length=max(4192, max(len(line.encode()) for line in lines) + 1),
                num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, hard_vocab_limit=False,
                minloglevel=4)
        except RuntimeError as exc:
            raise SeqappError(subword_size_problem(str(exc), vocab_size)) from None
        self.model_proto = model.getvalue()
        processor = sentencepiece.SentencePieceProcessor(model_proto=self.model_proto)
        self.vocab = [processor.id_to_piece(i) for i in range(processor.vocab_size())]
        self.index = {token: i for i, token in enumerate(self.vocab)}
        self._processor = processor
        if len(self.vocab) < vocab_size:
            log.info(f"{name}: {len(self.vocab):,} pieces (data.vocab_size {vocab_size} is more than this text "
                     "can make)")
        return self

    def encode(self, text: str, add_start: bool = False, add_end: bool = False) -> list[int]:
        """Ids of ``text``; unknown tokens become the OOV id."""
        if self.level == "subword":
            ids = self.processor.encode(self.standardize(text))
        else:
            ids = [self.index.get(token, OOV_ID) for token in self.split(text)]
        return ([START_ID] if add_start else []) + ids + ([END_ID] if add_end else [])

    def encode_array(self, text: str) -> np.ndarray:
        """``encode`` as an int32 NumPy array (for long corpora)."""
        if self.level == "subword":
            return np.asarray(self.encode(text), dtype=np.int32)
        return np.fromiter((self.index.get(token, OOV_ID) for token in self.split(text)), dtype=np.int32)

    def unknown_tokens(self, text: str) -> list[str]:
        """Distinct tokens of ``text`` that are not in the vocabulary, in order of appearance.

        At subword level: the characters no piece holds (SentencePiece spells them in
        bytes, which training never saw).
        """
        if self.level == "subword":
            known = self.known_characters()
            return list(dict.fromkeys(char for char in self.standardize(text) if char not in known))
        return list(dict.fromkeys(token for token in self.split(text) if token not in self.index))

    def known_characters(self) -> set[str]:
        """Subword level: the characters that some piece holds (a space is the space mark)."""
        if not hasattr(self, "_known"):
            pieces = self.vocab[len(SPECIALS):]
            self._known = {char for piece in pieces if not BYTE_PIECE.fullmatch(piece) for char in piece}
            if SPACE_MARK in self._known:
                self._known.add(" ")
        return self._known

    def never_generated(self) -> list[int]:
        """Ids a generator must not sample: the specials, and at subword level the byte pieces
        (never seen in training; one byte of a multi-byte character is no text to stream)."""
        byte_ids = [i for i, piece in enumerate(self.vocab) if self.level == "subword" and BYTE_PIECE.fullmatch(piece)]
        return list(range(len(SPECIALS))) + byte_ids

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
        """Join tokens back into text (word level: no space before punctuation; subword:
        SentencePiece's decoding, exact)."""
        if self.level == "char":
            return "".join(tokens)
        if self.level == "subword":
            return self.processor.decode([self.index.get(token, OOV_ID) for token in tokens])
        pieces: list[str] = []
        for token in tokens:
            glue = pieces and pieces[-1][-1:] not in NO_SPACE_AFTER and token not in NO_SPACE_BEFORE
            glue = glue and token != "\n"
            pieces.append((" " if glue else "") + token)
        return "".join(pieces)

    def piece(self, previous: str | None, token: str) -> str:
        """The text ``token`` adds after token ``previous`` (for streaming output).

        Subword level: the difference of the decoded texts with and without ``token`` (a
        leading space mark is a space, except at the very start of a text).
        """
        if self.level == "subword":
            if previous is None:
                return self.join([token])
            return self.join([previous, token])[len(self.join([previous])):]
        if self.level == "char" or previous is None:
            return token
        return self.join([previous, token])[len(self.join([previous])):]

    def to_dict(self) -> dict:
        """JSON-ready description (saved in ``preprocessing.json``)."""
        data = {
            "level": self.level,
            "lower": self.lower,
            "strip_punctuation": self.strip_punctuation,
            "vocab": self.vocab,
        }
        if self.level == "subword":
            data["subword_model"] = self.subword_model
            data["sentencepiece"] = base64.b64encode(self.model_proto or b"").decode("ascii")
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Tokenizer:
        """Rebuild a tokenizer saved with :meth:`to_dict`."""
        tok = cls(data["level"], lower=data.get("lower", False), strip_punctuation=data.get("strip_punctuation", False),
                  subword_model=data.get("subword_model", "unigram"))
        tok.vocab = list(data["vocab"])
        tok.index = {token: i for i, token in enumerate(tok.vocab)}
        if tok.level == "subword":
            try:
                tok.model_proto = base64.b64decode(data.get("sentencepiece", ""), validate=True)
            except ValueError:
                tok.model_proto = b""
        return tok


def subword_size_problem(message: str, vocab_size: int) -> str:
    """One line for SentencePiece's refusal of ``vocab_size`` (too small for the data's characters)."""
    too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", message)
    if too_small:
        return (f"data.vocab_size={vocab_size} is too small for this training text: its characters and the 256 "
                f"byte pieces need at least {too_small.group(1)}; set data.vocab_size to {too_small.group(1)} or more")
    reason = (message.strip().splitlines() or ["unknown error"])[-1][:200]
    return f"SentencePiece could not train a subword vocabulary ({reason}); check the training text and data.vocab_size"


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
