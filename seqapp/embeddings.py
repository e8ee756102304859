"""Word vectors from outside: a GloVe or word2vec text file, read for one vocabulary.

Files of pretrained word vectors run to gigabytes, so they are streamed line by line and
only the vectors of the vocabulary's words are kept. Two text formats are read, plain or
gzip-compressed (a ``.gz`` name):

- GloVe: ``word v1 v2 ... vN`` on each line;
- word2vec text (fastText ``.vec`` too): a first line ``count N``, then the same lines.

A vocabulary word takes the vector of the same word in the file; a word the file lacks
takes the vector of the first line whose word is the same once both are lower-cased (so a
lower-cased vocabulary reads a cased file such as word2vec's, and a cased vocabulary a
lower-cased one such as GloVe 6B). The rows no vector covers start random, drawn with the
covered vectors' mean and spread in each dimension (:func:`fill_matrix`), so they sit among
the real vectors rather than near zero. Nothing here imports TensorFlow: the cheap checks
(:func:`file_dimension`) run before it starts.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from seqapp import datafiles
from seqapp.errors import SeqappError
from seqapp.text import PAD_ID, SPECIALS

SETTING = "model.pretrained_embeddings"
FORMAT = "a GloVe or word2vec text file: 'word v1 ... vN' per line (word2vec: after a first line 'count N')"


class Matcher:
    """Fills vocabulary rows from (word, vector) pairs offered one at a time.

    An exact match wins over a case-insensitive one; among case-insensitive matches the
    first offered wins (vector files list frequent words first). Special tokens are skipped.
    """

    def __init__(self, vocab: Sequence[str], skip: int = len(SPECIALS)) -> None:
        self.index = {word: i for i, word in enumerate(vocab) if i >= skip}
        self.folded: dict[str, list[int]] = {}
        for word, i in self.index.items():
            self.folded.setdefault(word.lower(), []).append(i)
        self.rows: dict[int, np.ndarray] = {}
        self.exact: set[int] = set()

    @property
    def words(self) -> int:
        """How many vocabulary words are looked up (specials left out)."""
        return len(self.index)

    def offer(self, word: str, vector: Any, parse: Callable[[Any], np.ndarray] = np.asarray) -> None:
        """Keep ``parse(vector)`` for the rows ``word`` fills; ``vector`` is parsed only when kept."""
        exact = self.index.get(word)
        if exact in self.exact:
            exact = None
        folded = [i for i in self.folded.get(word.lower(), ()) if i not in self.rows and i != exact]
        if exact is None and not folded:
            return
        value = parse(vector)
        if exact is not None:
            self.rows[exact] = value
            self.exact.add(exact)
        for i in folded:
            self.rows[i] = value


def coverage_line(what: str, found: int, words: int, source: str) -> str:
    """``"<what>: 8,412 of 9,996 words (84.2%) found in SOURCE"``, the line a training logs."""
    share = 100.0 * found / words if words else 0.0
    return f"{what}: {found:,} of {words:,} words ({share:.1f}%) found in {source}"


def fill_matrix(rows: dict[int, np.ndarray], vocab_size: int, dim: int, seed: int) -> np.ndarray:
    """A (vocab_size, dim) float32 embedding matrix: ``rows`` where given, the padding row zero,
    every other row drawn from a normal distribution with the given rows' mean and standard
    deviation per dimension (seeded, so a run is reproducible)."""
    found = np.stack([np.asarray(vector, np.float32) for vector in rows.values()]) if rows else np.zeros((1, dim))
    spread = found.std(axis=0) if len(found) > 1 else np.full(dim, float(np.abs(found).mean()) or 1.0)
    matrix = np.random.default_rng(seed).normal(found.mean(axis=0), spread, (vocab_size, dim)).astype(np.float32)
    if rows:
        matrix[list(rows)] = found
    matrix[PAD_ID] = 0.0
    return matrix


# -- vector files -----------------------------------------------------------------------
@contextmanager
def numbered_lines(path: Path) -> Iterator[Iterator[tuple[int, str]]]:
    """The file's lines (1-based number, text without the line break), decoded one by one so
    that a bad byte is reported with its line; a ``.gz`` file is decompressed on the fly."""
    datafiles.stat_regular(path, "pretrained embeddings file", f"check the path given to {SETTING}")
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise datafiles.path_error(exc, path, "pretrained embeddings file", f"check the path given to {SETTING}") \
            from None

    def lines() -> Iterator[tuple[int, str]]:
        number = 0
        try:
            for number, raw in enumerate(handle, 1):
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError:
                    binary = " (a word2vec binary file? save it in the text format)" if number <= 2 else ""
                    raise SeqappError(f"{SETTING} file {path} is not UTF-8 text (bad byte at line {number})"
                                      f"{binary}; give {FORMAT}") from None
                yield number, text.rstrip("\r\n")
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            raise SeqappError(f"{SETTING} file {path} cannot be read after line {number} ({exc}); "
                              "check the file (a .gz name must hold gzip data)") from None

    with handle:
        yield lines()


def header_dimension(text: str) -> int | None:
    """The vector size a word2vec header line ``count dim`` declares; None for any other line."""
    parts = text.split()
    if len(parts) == 2 and all(part.isdigit() for part in parts):
        return int(parts[1])
    return None


def split_line(text: str, dim: int, path: Path, number: int) -> tuple[str, str]:
    """A vector line's word and the text of its ``dim`` values (a word may hold spaces, as some
    GloVe words do: the values are the last ``dim`` fields)."""
    text = text.rstrip()  # word2vec's own tool ends each line with a space
    spaces = text.count(" ")
    if spaces < dim or text.startswith(" "):
        found = len(text.split()) - 1
        raise SeqappError(f"{SETTING} file {path}:{number} has {max(found, 0)} value(s) after its word, but the file's "
                          f"vectors have {dim}; give {FORMAT}, separated by single spaces")
    if spaces == dim:
        cut = text.index(" ")
        return text[:cut], text[cut + 1:]
    parts = text.rsplit(" ", dim)
    return parts[0], text[len(parts[0]) + 1:]


def parse_values(values: str, dim: int, path: Path, number: int) -> np.ndarray:
    """The ``dim`` numbers of a vector line, or a SeqappError naming the line."""
    try:
        vector = np.asarray(values.split(" "), dtype=np.float32)
    except ValueError:
        vector = None
    if vector is None or vector.shape != (dim,) or not np.isfinite(vector).all():
        raise SeqappError(f"{SETTING} file {path}:{number} has a value that is not a finite number; give {FORMAT}")
    return vector


def vector_lines(path: Path) -> Iterator[tuple[int, int, str, str]]:
    """(dimension, line number, word, values text) of each vector line of ``path``; blank lines skipped."""
    with numbered_lines(path) as lines:
        dim, count = None, 0
        for number, text in lines:
            if not text.strip():
                continue
            if dim is None:
                dim = header_dimension(text)
                if dim is not None:  # word2vec: the vectors follow
                    if dim < 1:
                        raise SeqappError(f"{SETTING} file {path}:{number} declares vectors of size {dim}; "
                                          f"give {FORMAT}")
                    continue
                dim = len(text.split()) - 1
                if dim < 1:
                    raise SeqappError(f"{SETTING} file {path}:{number} holds a word without a vector; give {FORMAT}")
            word, values = split_line(text, dim, path, number)
            count += 1
            yield dim, number, word, values
        if not count:
            raise SeqappError(f"{SETTING} file {path} has no vectors; give {FORMAT}")


def file_dimension(path: str | Path, lines: int = 2) -> int:
    """The vector size of a vector file, read from its first ``lines`` vector lines (which are
    checked): the cheap check that runs before TensorFlow starts."""
    path = Path(path)
    dim = 0
    for dim, number, _word, values in vector_lines(path):
        parse_values(values, dim, path, number)
        lines -= 1
        if lines <= 0:
            break
    return dim


def read_vectors(path: str | Path, vocab: Sequence[str]) -> tuple[int, Matcher]:
    """Stream ``path`` and keep the vectors of the words of ``vocab``: (the file's vector size,
    the :class:`Matcher` holding the rows found). Every line's shape is checked; only the kept
    vectors are parsed as numbers."""
    path = Path(path)
    matcher = Matcher(vocab)
    dim = 0
    for dim, number, word, values in vector_lines(path):
        matcher.offer(word, values, functools.partial(parse_values, dim=dim, path=path, number=number))
    return dim, matcher


def match_pairs(vocab: Sequence[str], pairs: Iterable[tuple[str, Any]]) -> Matcher:
    """A :class:`Matcher` for ``vocab`` offered the (word, vector) ``pairs`` in order."""
    matcher = Matcher(vocab)
    for word, vector in pairs:
        matcher.offer(word, vector)
    return matcher
