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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seqapp.text import END_ID, OOV_ID, PAD_ID, START_ID, Tokenizer, pad

# Never produced: padding, the start token, and <unk> (which would print as nothing useful).
BANNED_IDS = (PAD_ID, OOV_ID, START_ID)

StepCallable = Callable[[np.ndarray, list, list], tuple[np.ndarray, list, Any]]


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


def greedy_search(step: StepCallable, context: list, states: list, max_len: int,
                  length_penalty: float = 1.0) -> list[Hypothesis]:
    """The most likely next token at every step, for all sentences of the batch at once."""
    batch = len(states[0]) if states else len(context[0])
    tokens = np.full(batch, START_ID, np.int32)
    finished = np.zeros(batch, bool)
    log_prob = np.zeros(batch)
    produced, attention_rows = [], []
    for _ in range(max_len):
        log_probs, states, attention = step(tokens[:, None], context, states)
        log_probs = np.array(log_probs, np.float64)
        log_probs[:, BANNED_IDS] = -np.inf
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
                length_penalty: float = 1.0) -> list[Hypothesis]:
    """Beam search over all sentences of the batch at once; the best hypothesis of each.

    Each sentence keeps ``beam`` hypotheses. At every step each one is extended by every
    token, and the ``beam`` best candidates by length-normalised log-probability survive
    (a finished hypothesis competes unchanged). The search stops when every kept
    hypothesis has produced END, or after ``max_len`` tokens.
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
        step_log_probs[..., BANNED_IDS] = -np.inf
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
    return pick_best(history, log_prob, length, length_penalty, attention_history)


def pick_best(history: np.ndarray, log_prob: np.ndarray, length: np.ndarray, length_penalty: float,
              attention_history: np.ndarray | None) -> list[Hypothesis]:
    """The hypothesis with the best length-normalised score, for each sentence."""
    batch, beam = log_prob.shape
    scores = normalised(log_prob, length, length_penalty)
    best = scores.argmax(axis=-1)
    found = []
    for b, k in enumerate(best):
        ids = trim(history[b, k])
        attention = None
        if attention_history is not None:
            attention = attention_history[b * beam + k, : len(ids)]
        found.append(Hypothesis(ids, float(log_prob[b, k]), float(scores[b, k]), attention))
    return found


def search(step: StepCallable, context: list, states: list, max_len: int, beam: int = 1,
           length_penalty: float = 1.0) -> list[Hypothesis]:
    """Greedy search for ``beam == 1``, beam search otherwise."""
    if beam == 1:
        return greedy_search(step, context, states, max_len, length_penalty)
    return beam_search(step, context, states, max_len, beam, length_penalty)


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
        found: list[Hypothesis] = []
        for start in range(0, len(sources), batch_size):
            context, states = self.encode(self.source_ids(sources[start:start + batch_size]))
            found.extend(search(self.step, context, states, self.max_len, beam, self.length_penalty))
        return found

    def text(self, hypothesis: Hypothesis) -> str:
        """The detokenized text of a hypothesis (special tokens dropped)."""
        return self.detokenize(self.target_tokenizer.tokens(hypothesis.ids))

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
