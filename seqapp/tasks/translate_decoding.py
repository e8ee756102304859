"""Decoding for the translate task: greedy and beam search, step by step, many sentences at once.

The encoder runs once per batch of sentences; the decoder then feeds one token per step
and carries its recurrent state. The search functions only see a ``step`` callable::

    step(tokens [N, 1], context, states) -> (log_probs [N, vocab], new_states, attention [N, S] | None)

where ``context`` holds per-sentence arrays that never change (encoder outputs, source
mask) and ``states`` the per-hypothesis recurrent states; so the same search runs on the
trained network (a :class:`Translator`, on TensorFlow or on LiteRT) or on a hand-built toy
model in the tests.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqapp import progress
from seqapp.sampling import repeated_ngram_mask
from seqapp.text import END_ID, OOV_ID, PAD_ID, SPECIALS, START_ID, Tokenizer, pad

# Never produced: padding, the start token, and <unk> (which would print as nothing useful).
BANNED_IDS = (PAD_ID, OOV_ID, START_ID)
# With --replace-unk, <unk> may be produced: it is then replaced by a source token.
BANNED_WITH_UNK = (PAD_ID, START_ID)

StepCallable = Callable[[np.ndarray, list, list], tuple[np.ndarray, list, Any]]


@dataclass(frozen=True)
class Decoding:
    """How ``seqapp predict`` asks a translation to be searched; None: the run's own setting."""

    beam: int = 1  # beam width (1: greedy search)
    n_best: int = 1  # hypotheses returned per sentence, best first (at most ``beam``)
    length_penalty: float | None = None  # None: the run's model.length_penalty
    max_len: int | None = None  # output tokens at most; None: the run's max_len
    no_repeat_ngram: int | None = None  # no n-gram of this many tokens twice in one output
    replace_unk: bool = False  # <unk> may be produced; its text is the most attended source token


@dataclass
class Hypothesis:
    """One decoded output: target ids (END included when it was produced), score, attention rows."""

    ids: list[int]
    log_prob: float
    score: float  # log_prob / length ** length_penalty, what beam search ranks by
    attention: np.ndarray | None = None  # [len(ids), source_len], when the model has attention


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    logits = np.asarray(logits, np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def normalised(log_prob: np.ndarray, length: np.ndarray, length_penalty: float) -> np.ndarray:
    """Length-normalised score: ``log_prob / length ** length_penalty`` (length >= 1)."""
    return log_prob / np.maximum(length, 1) ** length_penalty


def trim(ids: Sequence[int]) -> list[int]:
    """Ids up to and including the first END (padding after it dropped)."""
    ids = [int(i) for i in ids]
    return ids[: ids.index(END_ID) + 1] if END_ID in ids else [i for i in ids if i != PAD_ID]


def mask_repeats(log_probs: np.ndarray, produced: np.ndarray, no_repeat_ngram: int | None) -> None:
    """Set to -inf, in place, the log-probabilities (``[rows, vocab]``) of the tokens that would
    repeat an n-gram of ``no_repeat_ngram`` tokens in their row of ``produced`` (``[rows, steps]``).
    ``</s>`` is never among them (no output holds it before its end), so every row keeps a choice."""
    if no_repeat_ngram:
        log_probs[repeated_ngram_mask(produced, no_repeat_ngram, log_probs.shape[-1])] = -np.inf


def greedy_search(step: StepCallable, context: list, states: list, max_len: int,
                  length_penalty: float = 1.0, *, no_repeat_ngram: int | None = None,
                  banned: Sequence[int] = BANNED_IDS) -> list[Hypothesis]:
    """The most likely next token at every step, for all sentences of the batch at once
    (never one of ``banned``, nor one repeating an n-gram of ``no_repeat_ngram`` tokens)."""
    batch = len(states[0]) if states else len(context[0])
    tokens = np.full(batch, START_ID, np.int32)
    finished = np.zeros(batch, bool)
    log_prob = np.zeros(batch)
    produced, attention_rows = [], []
    for _ in range(max_len):
        log_probs, states, attention = step(tokens[:, None], context, states)
        log_probs = np.array(log_probs, np.float64)
        log_probs[:, list(banned)] = -np.inf
        if produced:
            mask_repeats(log_probs, np.stack(produced, axis=1), no_repeat_ngram)
        tokens = log_probs.argmax(axis=-1).astype(np.int32)
        tokens[finished] = PAD_ID
        log_prob += np.where(finished, 0.0, log_probs[np.arange(batch), tokens])
        produced.append(tokens)
        attention_rows.append(attention)
        finished |= tokens == END_ID
        if finished.all():
            break
    ids = np.stack(produced, axis=1) if produced else np.zeros((batch, 0), np.int32)
    return [make_hypothesis(ids[b], log_prob[b], length_penalty, attention_rows, b) for b in range(batch)]


def make_hypothesis(ids: np.ndarray, log_prob: float, length_penalty: float,
                    attention_rows: list, row: int) -> Hypothesis:
    """Wrap one greedy result, with its attention rows when the model has attention."""
    kept = trim(ids)
    attention = None
    if attention_rows and attention_rows[0] is not None:
        attention = np.stack([rows[row] for rows in attention_rows[: len(kept)]])
    score = float(normalised(np.float64(log_prob), np.float64(len(kept)), length_penalty))
    return Hypothesis(kept, float(log_prob), score, attention)


def beam_search(step: StepCallable, context: list, states: list, max_len: int, beam: int,
                length_penalty: float = 1.0, **options: Any) -> list[Hypothesis]:
    """Beam search over all sentences of the batch at once; the best hypothesis of each
    (``options``: those of :func:`beam_search_ranked`)."""
    return [ranked[0] for ranked in beam_search_ranked(step, context, states, max_len, beam, length_penalty,
                                                       **options)]


def beam_search_ranked(step: StepCallable, context: list, states: list, max_len: int, beam: int,
                       length_penalty: float = 1.0, *, n_best: int = 1, no_repeat_ngram: int | None = None,
                       banned: Sequence[int] = BANNED_IDS) -> list[list[Hypothesis]]:
    """Beam search over all sentences of the batch at once; the ``n_best`` best hypotheses of
    each (at most ``beam``), best first.

    Each sentence keeps ``beam`` hypotheses. At every step each one is extended by every
    token, and the ``beam`` best candidates by length-normalised log-probability survive
    (a finished hypothesis competes unchanged). The search stops when every kept
    hypothesis has produced END, or after ``max_len`` tokens. No hypothesis holds a token of
    ``banned``, nor an n-gram of ``no_repeat_ngram`` tokens twice.
    """
    batch = len(context[0]) if context else len(states[0])
    rows = batch * beam
    context = [np.repeat(np.asarray(array), beam, axis=0) for array in context]
    states = [np.repeat(np.asarray(state), beam, axis=0) for state in states]
    log_prob = np.full((batch, beam), -np.inf)
    log_prob[:, 0] = 0.0  # all beams start identical: keep one until the first split
    length = np.zeros((batch, beam), np.int64)
    finished = np.zeros((batch, beam), bool)
    history = np.zeros((batch, beam, 0), np.int32)
    attention_history = None
    tokens = np.full(rows, START_ID, np.int32)
    for _ in range(max_len):
        step_log_probs, new_states, attention = step(tokens[:, None], context, states)
        step_log_probs = np.array(step_log_probs, np.float64).reshape(batch, beam, -1)
        vocab = step_log_probs.shape[-1]
        step_log_probs[..., list(banned)] = -np.inf
        mask_repeats(step_log_probs.reshape(rows, vocab), history.reshape(rows, -1), no_repeat_ngram)
        step_log_probs[finished] = -np.inf
        step_log_probs[finished, PAD_ID] = 0.0  # a finished hypothesis continues with padding only
        candidates = log_prob[..., None] + step_log_probs
        candidate_length = (length + ~finished)[..., None]
        ranked = normalised(candidates, candidate_length, length_penalty).reshape(batch, -1)
        best = np.argsort(-ranked, axis=-1, kind="stable")[:, :beam]
        parent, tokens_2d = best // vocab, (best % vocab).astype(np.int32)
        flat_parent = (np.arange(batch)[:, None] * beam + parent).ravel()
        log_prob = np.take_along_axis(candidates.reshape(batch, -1), best, axis=-1)
        length = np.take_along_axis(length + ~finished, parent, axis=-1)
        finished = np.take_along_axis(finished, parent, axis=-1) | (tokens_2d == END_ID)
        history = np.concatenate([history.reshape(rows, history.shape[-1])[flat_parent].reshape(batch, beam, -1),
                                  tokens_2d[..., None]], axis=-1)
        if attention is not None:
            step_rows = np.asarray(attention)[flat_parent][:, None, :]
            previous = attention_history[flat_parent] if attention_history is not None else None
            attention_history = step_rows if previous is None else np.concatenate([previous, step_rows], axis=1)
        states = [np.asarray(state)[flat_parent] for state in new_states]
        tokens = tokens_2d.ravel()
        if finished.all():
            break
    return ranked_hypotheses(history, log_prob, length, length_penalty, attention_history, n_best)


def ranked_hypotheses(history: np.ndarray, log_prob: np.ndarray, length: np.ndarray, length_penalty: float,
                      attention_history: np.ndarray | None, n_best: int = 1) -> list[list[Hypothesis]]:
    """For each sentence, its ``n_best`` hypotheses by length-normalised score, best first (the
    first as ``argmax`` picks it); a hypothesis that could not be completed (score -inf, when
    fewer candidates than the beam exist) is left out, unless it is the only one."""
    batch, beam = log_prob.shape
    scores = normalised(log_prob, length, length_penalty)
    order = np.argsort(-scores, axis=-1, kind="stable")
    found = []
    for b in range(batch):
        ranked = []
        for k in order[b, :n_best]:
            if ranked and not np.isfinite(scores[b, k]):
                break
            ids = trim(history[b, k])
            attention = None
            if attention_history is not None:
                attention = attention_history[b * beam + k, : len(ids)]
            ranked.append(Hypothesis(ids, float(log_prob[b, k]), float(scores[b, k]), attention))
        found.append(ranked)
    return found


def search(step: StepCallable, context: list, states: list, max_len: int, beam: int = 1,
           length_penalty: float = 1.0, **options: Any) -> list[Hypothesis]:
    """Greedy search for ``beam == 1``, beam search otherwise (``options``: ``no_repeat_ngram``, ``banned``)."""
    return [ranked[0] for ranked in ranked_search(step, context, states, max_len, beam, length_penalty, **options)]


def ranked_search(step: StepCallable, context: list, states: list, max_len: int, beam: int = 1,
                  length_penalty: float = 1.0, *, n_best: int = 1, **options: Any) -> list[list[Hypothesis]]:
    """The ``n_best`` best hypotheses of each sentence, best first: greedy search's one for
    ``beam == 1``, else beam search's (``options``: ``no_repeat_ngram``, ``banned``)."""
    if beam == 1:
        return [[found] for found in greedy_search(step, context, states, max_len, length_penalty, **options)]
    return beam_search_ranked(step, context, states, max_len, beam, length_penalty, n_best=n_best, **options)


class Translator:
    """A trained encoder-decoder, ready to translate: what does not depend on the engine.

    Tokenizing, padding, batching, the numpy search and detokenizing live here once; a
    subclass only runs the network: :meth:`encode` (source ids -> ``[*memory, *states]``,
    memory being the encoder outputs and attention keys, only with attention) and
    :meth:`step` (``[tokens, *memory, source_mask, *states]`` -> ``[logits, *states(,
    attention)]``), on TensorFlow (:class:`KerasTranslator`) or on the LiteRT interpreter
    (:class:`LiteRTTranslator`, which never imports TensorFlow).
    """

    def __init__(self, source_tokenizer: Tokenizer, target_tokenizer: Tokenizer, max_len: int,
                 length_penalty: float, memory_count: int,
                 detokenize: Callable[[list[str]], str] | None = None) -> None:
        self.source_tokenizer = source_tokenizer
        self.target_tokenizer = target_tokenizer
        self.detokenize = detokenize or target_tokenizer.join
        self.max_len = max_len
        self.length_penalty = length_penalty
        self.memory_count = memory_count
        self.has_attention = memory_count > 0

    def run_encoder(self, source_ids: np.ndarray) -> list[np.ndarray]:
        """The encoder's outputs ``[*memory, *states]`` for int32 ``source_ids``."""
        raise NotImplementedError

    def run_step(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """The decoder step's outputs ``[logits, *states(, attention)]`` for its inputs."""
        raise NotImplementedError

    def encode(self, source_ids: np.ndarray) -> tuple[list, list]:
        """Run the encoder once: the per-sentence context and the decoder's initial states."""
        source_ids = np.asarray(source_ids, np.int32)
        outputs = self.run_encoder(source_ids)
        memory, states = outputs[: self.memory_count], outputs[self.memory_count:]
        context = [*memory, source_ids != PAD_ID] if self.has_attention else []
        return context, states

    def step(self, tokens: np.ndarray, context: list, states: list) -> tuple[np.ndarray, list, Any]:
        """One decoder step for every hypothesis: log-probabilities, new states, attention."""
        outputs = self.run_step([np.asarray(tokens, np.int32), *context, *states])
        logits, rest = outputs[0], list(outputs[1:])
        attention = rest.pop() if self.has_attention else None
        return log_softmax(logits), rest, attention

    def source_ids(self, sources: Sequence[str]) -> np.ndarray:
        """Encoded, right-padded source sentences (at least one column), each cut to its first
        ``max_len`` tokens: training never saw a longer source, and the cut keeps the time and
        memory of one sentence bounded (the LiteRT encoder's grow faster than the length)."""
        encoded = [self.source_tokenizer.encode(text)[:self.max_len] or [PAD_ID] for text in sources]
        return pad(encoded)

    def decode_ids(self, sources: Sequence[str], beam: int = 1, batch_size: int = 256) -> list[Hypothesis]:
        """Best hypothesis per source sentence, decoding ``batch_size`` sentences at a time."""
        return [ranked[0] for ranked in self.decode_ranked(sources, Decoding(beam=beam), batch_size)]

    def decode_ranked(self, sources: Sequence[str], decoding: Decoding,
                      batch_size: int = 256) -> list[list[Hypothesis]]:
        """The ``decoding.n_best`` best hypotheses per source sentence, best first, searched as
        ``decoding`` says (the run's length penalty and max_len where it says None); the sentences
        done are reported after each batch (:func:`seqapp.progress.report`)."""
        max_len = min(decoding.max_len or self.max_len, self.max_len)
        length_penalty = self.length_penalty if decoding.length_penalty is None else decoding.length_penalty
        banned = BANNED_WITH_UNK if decoding.replace_unk else BANNED_IDS
        # subword targets: SentencePiece's byte pieces too (one byte of a character is no text)
        banned = (*banned, *(i for i in self.target_tokenizer.never_generated() if i >= len(SPECIALS)))
        found: list[list[Hypothesis]] = []
        what = "greedy decoding" if decoding.beam == 1 else f"beam {decoding.beam} decoding"
        progress.report(what, 0, len(sources))
        for start in range(0, len(sources), batch_size):
            context, states = self.encode(self.source_ids(sources[start:start + batch_size]))
            found.extend(ranked_search(self.step, context, states, max_len, decoding.beam, length_penalty,
                                       n_best=decoding.n_best, no_repeat_ngram=decoding.no_repeat_ngram,
                                       banned=banned))
            progress.report(what, len(found), len(sources))
        return found

    def text(self, hypothesis: Hypothesis, source: str | None = None) -> str:
        """The detokenized text of a hypothesis (special tokens dropped); with the ``source`` it
        was translated from, each ``<unk>`` becomes the source token it attended to most."""
        if source is None or OOV_ID not in hypothesis.ids or hypothesis.attention is None:
            return self.detokenize(self.target_tokenizer.tokens(hypothesis.ids))
        source_tokens = self.source_tokens(source)
        tokens = []
        for position, token_id in enumerate(hypothesis.ids):
            if token_id == END_ID:
                break
            if token_id == OOV_ID and source_tokens:
                weights = np.asarray(hypothesis.attention[position])[: len(source_tokens)]
                tokens.append(source_tokens[int(np.argmax(weights))])
            else:
                tokens.extend(self.target_tokenizer.tokens([token_id]))
        return self.detokenize(tokens)

    def source_tokens(self, source: str) -> list[str]:
        """The tokens of ``source`` at the encoder's positions (its first ``max_len``), in the case
        the user wrote them when the source tokenizer lower-cases and the count stays the same."""
        tokens = self.source_tokenizer.split(source)[: self.max_len]
        if getattr(self.source_tokenizer, "lower", False):
            as_written = copy.copy(self.source_tokenizer)
            as_written.lower = False
            written = as_written.split(source)[: self.max_len]
            if len(written) == len(tokens):
                return written
        return tokens

    def translate(self, sources: Sequence[str], beam: int = 1, batch_size: int = 256) -> list[str]:
        """Detokenized translations of ``sources``."""
        return [self.text(hyp) for hyp in self.decode_ids(sources, beam, batch_size)]


class KerasTranslator(Translator):
    """The encoder and decoder-step Keras models (sharing the trained layers), each traced
    once by ``tf.function`` with shape-polymorphic signatures."""

    def __init__(self, encoder: Any, step: Any, *args: Any, state_sizes: Sequence[int], memory_size: int,
                 **kwargs: Any) -> None:
        import tensorflow as tf

        super().__init__(*args, **kwargs)
        memory_specs = [tf.TensorSpec([None, None, memory_size], tf.float32)] * self.memory_count
        mask_specs = [tf.TensorSpec([None, None], tf.bool)] if self.has_attention else []
        state_specs = [tf.TensorSpec([None, size], tf.float32) for size in state_sizes]
        self._encode = tf.function(lambda source: encoder(source, training=False),
                                   input_signature=[tf.TensorSpec([None, None], tf.int32)])
        self._step = tf.function(lambda tokens, *rest: step([tokens, *rest], training=False),
                                 input_signature=[tf.TensorSpec([None, None], tf.int32), *memory_specs,
                                                  *mask_specs, *state_specs])

    def run_encoder(self, source_ids: np.ndarray) -> list[np.ndarray]:
        outputs = self._encode(source_ids)
        return [np.asarray(output) for output in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]

    def run_step(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(output) for output in self._step(*inputs)]


class LiteRTTranslator(Translator):
    """The run's encoder and decoder-step LiteRT graphs (see ``Translate.export``).

    Both graphs take a fixed batch of rows (sentences, or hypotheses of beam search) and
    any source length: the rows go through in batches of the graph's size, the last one
    topped up with filler rows; the source length is resized once per batch of sentences.
    """

    def __init__(self, encoder: Any, step: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoder = encoder
        self.step_graph = step

    def run_encoder(self, source_ids: np.ndarray) -> list[np.ndarray]:
        from seqapp import litert

        filler = np.full(source_ids.shape[1], PAD_ID, np.int32)
        filler[0] = OOV_ID  # one unknown token: never a fully masked filler row
        name = self.encoder.input_names[0]
        return litert.batched_outputs(self.encoder, {name: source_ids}, {name: filler})

    def run_step(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        from seqapp import litert

        return litert.batched_outputs(self.step_graph, dict(zip(self.step_graph.input_names, inputs)))
