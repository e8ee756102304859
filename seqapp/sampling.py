"""Choosing the next token: greedy, temperature, top-k and top-p (nucleus) sampling.

Sampling works on a batch of logits in NumPy, one row per sequence, with an explicit
``numpy.random.Generator`` so that ``--random-seed`` makes generation reproducible.
The recurrent state is carried by :class:`StepFunction`, a compiled single-step call.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from seqapp.errors import SeqappError


def check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject impossible sampling settings with a clear message."""
    if temperature < 0:
        raise SeqappError(f"--temperature {temperature} is negative; use 0 for greedy decoding or a value > 0")
    if top_k is not None and top_k < 1:
        raise SeqappError(f"--top-k {top_k} must be at least 1 (or leave it out)")
    if top_p is not None and not 0 < top_p <= 1:
        raise SeqappError(f"--top-p {top_p} must be in (0, 1] (1 keeps every token)")


def sample(
    logits: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    banned: Sequence[int] = (),
) -> np.ndarray:
    """One token id per row of ``logits`` (shape ``[batch, vocab]``).

    ``temperature == 0`` is greedy (argmax). Otherwise the logits are divided by the
    temperature, cut to the ``top_k`` most likely tokens and to the smallest set whose
    probability reaches ``top_p``, and a token is drawn from what remains.
    """
    logits = np.array(logits, dtype=np.float64)
    if banned:
        logits[:, list(banned)] = -np.inf
    if temperature == 0:
        return logits.argmax(axis=-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k][:, None]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = softmax(logits)
    if top_p is not None and top_p < 1:
        probs = nucleus(probs, top_p)
    cumulative = probs.cumsum(axis=-1)
    draws = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    return np.minimum((cumulative < draws).sum(axis=-1), probs.shape[-1] - 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax that tolerates ``-inf`` entries."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def nucleus(probs: np.ndarray, top_p: float) -> np.ndarray:
    """Zero all but the smallest set of most likely tokens whose total reaches ``top_p``."""
    order = np.argsort(-probs, axis=-1)
    sorted_probs = np.take_along_axis(probs, order, axis=-1)
    before = sorted_probs.cumsum(axis=-1) - sorted_probs  # mass of strictly more likely tokens
    keep_sorted = before < top_p
    keep = np.zeros_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    kept = np.where(keep, probs, 0.0)
    return kept / kept.sum(axis=-1, keepdims=True)


class StepFunction:
    """A step model (inputs: tokens and states; outputs: logits and new states), compiled.

    The call is traced once by ``tf.function`` with a shape-polymorphic signature, so the
    seed (many tokens) and each later step (one token) reuse the same graph.
    """

    def __init__(self, step_model: Any, state_shapes: Sequence[int]) -> None:
        import tensorflow as tf

        signature = [tf.TensorSpec([None, None], tf.int32)] + [
            tf.TensorSpec([None, size], tf.float32) for size in state_shapes
        ]
        self.state_shapes = list(state_shapes)
        self._call = tf.function(lambda tokens, *states: step_model([tokens, *states], training=False),
                                 input_signature=signature)

    def zero_states(self, batch: int) -> list[np.ndarray]:
        """All-zero initial states for ``batch`` sequences."""
        return [np.zeros((batch, size), np.float32) for size in self.state_shapes]

    def __call__(self, tokens: np.ndarray, states: Sequence[Any]) -> tuple[np.ndarray, list]:
        """Feed ``tokens`` (``[batch, steps]``); return the last logits and the new states."""
        logits, *new_states = self._call(np.asarray(tokens, np.int32), *states)
        return logits.numpy(), new_states
