"""Choosing the next token (greedy, temperature, top-k, top-p) and stateful decoding.

Sampling runs inside TensorFlow graphs: :class:`StepFunction` feeds tokens through a
single-step model while carrying the recurrent state, and its :meth:`StepFunction.sampler`
runs whole chunks of sample-and-feed-back steps in one compiled call, so that generating
a character costs one graph loop iteration rather than one Python round trip. Random
draws are stateless and keyed by ``(random_seed, step)``, so ``--random-seed`` makes
generation reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seqapp.errors import SeqappError

TOP_P_TOLERANCE = 1e-6
# The temperatures above 0 that sampling can use: logits are divided by the temperature in
# float32, which turns a larger one into 0 or infinity (1e39) and a smaller one into 0
# (1e-46) or its logits into infinite ties, and the draw into <pad> tokens or wrong text.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-30, 1e30


def check_options(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Reject impossible sampling settings with a clear message (the same rules on every engine)."""
    if not math.isfinite(temperature) or temperature < 0:
        raise SeqappError(f"--temperature {temperature} must be a finite number >= 0; use 0 for greedy decoding "
                          "or a value > 0 such as 0.8")
    if temperature != 0 and not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:
        raise SeqappError(f"--temperature {temperature:g} is outside what sampling can compute with (float32); "
                          f"use 0 for greedy decoding or a value from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}, "
                          "such as 0.8")
    if top_k is not None and top_k < 1:
        raise SeqappError(f"--top-k {top_k} must be at least 1; leave it out to sample from every token")
    if top_p is not None and not 0 < top_p <= 1:  # NaN fails this too
        raise SeqappError(f"--top-p {top_p} must be in (0, 1]; 1 keeps every token")


def check_counts(length: int, num_samples: int) -> None:
    """Reject a negative ``--length`` or fewer than one ``--num-samples``."""
    if length < 0:
        raise SeqappError(f"--length {length} is negative; give the number of tokens to generate, e.g. --length 300")
    if num_samples < 1:
        raise SeqappError(f"--num-samples {num_samples} must be at least 1; e.g. --num-samples 3")


def check_no_repeat_ngram(size: int | None, option: str = "--no-repeat-ngram") -> None:
    """Refuse a ``--no-repeat-ngram`` below 1 (None: the option is off)."""
    if size is not None and size < 1:
        raise SeqappError(f"{option} {size} must be at least 1 (the size of the n-grams that may not repeat); "
                          "e.g. 3, or leave it out")


def check_stops(stops: Sequence[str] | None) -> None:
    """Refuse an empty ``--stop`` string (it would end every text before its first character)."""
    for stop in stops or ():
        if not stop:
            raise SeqappError("--stop '' is empty; give the text that ends the generation, e.g. --stop '.'")


def repeated_ngram_mask(history: np.ndarray, size: int, vocab: int) -> np.ndarray:
    """``[rows, vocab]``: True where a token would complete an n-gram of ``size`` tokens that
    row ``history[row]`` (``[rows, length]`` token ids) already holds, as OpenNMT's and fairseq's
    ``no_repeat_ngram_size``: the last ``size - 1`` tokens are looked up among the earlier ones."""
    history = np.asarray(history)
    mask = np.zeros((len(history), vocab), bool)
    if history.ndim != 2 or history.shape[1] < size:
        return mask
    grams = np.lib.stride_tricks.sliding_window_view(history, size, axis=1)  # [rows, windows, size]
    prefix = history[:, history.shape[1] - size + 1:]  # the last size - 1 tokens (none for size 1)
    rows, windows = np.nonzero((grams[:, :, :-1] == prefix[:, None, :]).all(axis=-1))
    mask[rows, grams[rows, windows, -1]] = True
    return mask


def filter_logits(logits: Any, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, banned: Sequence[int] = ()) -> Any:
    """Scale ``logits`` (``[batch, vocab]``) by temperature and mask tokens that may not be drawn.

    Masked tokens get ``-inf``: the ``banned`` ids, all but the ``top_k`` most likely, and
    all outside the smallest set whose probability reaches ``top_p``.
    """
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    vocab = logits.shape[-1]
    minus_inf = tf.fill(tf.shape(logits), -np.inf)
    if banned:
        mask = np.zeros(vocab, bool)
        mask[list(banned)] = True
        logits = tf.where(mask, minus_inf, logits)
    if temperature > 0:
        logits = logits / temperature
    if top_k is not None and top_k < vocab:
        kth = tf.math.top_k(logits, k=top_k).values[:, -1:]
        logits = tf.where(logits < kth, minus_inf, logits)
    if top_p is not None and top_p < 1:
        ordered = tf.sort(logits, direction="DESCENDING", axis=-1)
        mass_before = tf.math.cumsum(tf.nn.softmax(ordered), axis=-1, exclusive=True)
        # a mass within TOP_P_TOLERANCE of top_p counts as reaching it (float32 sums round);
        # the most likely token (mass before it: 0) is always kept
        below = mass_before < max(top_p - TOP_P_TOLERANCE, 1e-12)
        smallest_kept = tf.reduce_min(tf.where(below, ordered, np.inf), axis=-1, keepdims=True)
        logits = tf.where(logits < smallest_kept, minus_inf, logits)
    return logits


def sample(logits: Any, seed: Any, temperature: float = 1.0, top_k: int | None = None,
           top_p: float | None = None, banned: Sequence[int] = ()) -> Any:
    """One token id per row of ``logits``; ``temperature == 0`` is greedy (argmax).

    ``seed`` is a pair of integers; the same seed and logits always give the same draw.
    """
    import tensorflow as tf

    logits = filter_logits(logits, temperature, top_k, top_p, banned)
    if temperature == 0:
        return tf.argmax(logits, axis=-1, output_type=tf.int32)
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact categorical draw, and unlike
    # tf.random.stateless_categorical it compiles with XLA.
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed=seed, minval=1e-20, maxval=1.0)
    return tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1, output_type=tf.int32)


def filter_logits_numpy(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None,
                        top_p: float | None = None, banned: Sequence[int] = ()) -> np.ndarray:
    """:func:`filter_logits` in numpy, for the LiteRT engine (no TensorFlow): the same rules."""
    logits = np.array(logits, np.float32)
    if banned:
        logits[:, list(banned)] = -np.inf
    if temperature > 0:
        logits = logits / np.float32(temperature)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = -np.sort(-logits, axis=-1)[:, top_k - 1:top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if top_p is not None and top_p < 1:
        ordered = -np.sort(-logits, axis=-1)
        probs = np.exp(ordered - ordered[:, :1])
        probs /= probs.sum(axis=-1, keepdims=True)
        mass_before = np.cumsum(probs, axis=-1) - probs
        below = mass_before < max(top_p - TOP_P_TOLERANCE, 1e-12)
        smallest_kept = np.min(np.where(below, ordered, np.inf), axis=-1, keepdims=True)
        logits = np.where(logits < smallest_kept, -np.inf, logits)
    return logits


def sample_numpy(logits: np.ndarray, rng: np.random.Generator, temperature: float = 1.0, top_k: int | None = None,
                 top_p: float | None = None, banned: Sequence[int] = ()) -> np.ndarray:
    """:func:`sample` in numpy: greedy at temperature 0, else a Gumbel-max draw from ``rng``."""
    logits = filter_logits_numpy(logits, temperature, top_k, top_p, banned)
    if temperature == 0:
        return np.argmax(logits, axis=-1).astype(np.int32)
    uniform = rng.uniform(1e-20, 1.0, logits.shape)
    return np.argmax(logits - np.log(-np.log(uniform)), axis=-1).astype(np.int32)


class StepFunction:
    """A step model (inputs: ``[x, *states]``; outputs: ``[y, *new states]``), compiled.

    The state sizes are read from the step model's state inputs.
    Calling it feeds ``x`` (``[batch, steps, ...]``: token ids by default, or any
    ``input_spec`` such as float values with a feature axis) and returns the last output
    and the new states. The call is traced once with a shape-polymorphic signature, so a
    seed or history (many steps) and later single steps reuse the same graph.
    """

    def __init__(self, step_model: Any, input_spec: Any = None, jit_compile: bool = True) -> None:
        import tensorflow as tf

        input_spec = input_spec or tf.TensorSpec([None, None], tf.int32)
        self.step_model = step_model
        self.jit_compile = jit_compile  # the samplers' XLA: off, a first call is ~1 s cheaper and later ones slower
        self.state_shapes = [int(state.shape[-1]) for state in step_model.inputs[1:]]
        self.dtype = input_spec.dtype.as_numpy_dtype
        signature = [input_spec] + [tf.TensorSpec([None, size], tf.float32) for size in self.state_shapes]
        self._samplers: dict[tuple, Any] = {}
        self._call = tf.function(lambda x, *states: step_model([x, *states], training=False),
                                 input_signature=signature, autograph=False)

    @classmethod
    def sharing_weights(cls, step_model: Any, trained_model: Any, input_spec: Any = None) -> StepFunction:
        """A StepFunction over ``step_model`` after copying ``trained_model``'s weights into it.

        The two must create the same layers in the same order (see ``layers.stateful_step``).
        """
        step_model.set_weights(trained_model.get_weights())
        return cls(step_model, input_spec)

    def zero_states(self, batch: int) -> list[np.ndarray]:
        """All-zero initial states for ``batch`` sequences."""
        return [np.zeros((batch, size), np.float32) for size in self.state_shapes]

    def __call__(self, x: np.ndarray, states: Sequence[Any]) -> tuple[np.ndarray, list]:
        """Feed ``x``; return the last output (e.g. logits) and the new states."""
        output, *new_states = self._call(np.asarray(x, self.dtype), *states)
        return output.numpy(), new_states

    def sampler(self, chunk: int, temperature: float, top_k: int | None, top_p: float | None,
                banned: Sequence[int] = ()) -> Any:
        """A compiled ``(logits, states, seed, start) -> (ids [chunk, batch], logits, states)``.

        It samples a token, feeds it back and carries the state, ``chunk`` times in one
        graph; step ``i`` draws with the stateless seed ``(seed, start + i)``. One sampler
        is built per setting and kept, so a second call with the same settings neither
        retraces nor recompiles.
        """
        key = (chunk, float(temperature), top_k, top_p, tuple(banned))
        if key not in self._samplers:
            self._samplers[key] = self._compiled_sampler(chunk, temperature, top_k, top_p, banned)
        return self._samplers[key]

    def _compiled_sampler(self, chunk: int, temperature: float, top_k: int | None, top_p: float | None,
                          banned: Sequence[int]) -> Any:
        import tensorflow as tf

        step_model = self.step_model

        @tf.function(jit_compile=self.jit_compile)
        def run(logits: Any, states: list, seed: Any, start: Any) -> tuple:
            ids_out = tf.TensorArray(tf.int32, size=chunk)
            for i in tf.range(chunk):
                ids = sample(logits, tf.stack([seed, start + tf.cast(i, tf.int64)]), temperature, top_k, top_p, banned)
                ids_out = ids_out.write(i, ids)
                logits, *states = step_model([ids[:, None], *states], training=False)
            return ids_out.stack(), logits, states

        return run
