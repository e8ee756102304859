"""``seqapp export`` of a textgen run: a seed text in, the generated text out.

The graph does what :func:`seqapp.tasks.textgen.generate_texts` does: the run's tokenizer
(:mod:`seqapp.text_graph`; an empty seed is the run's default seed), the seed fed once
through the single-step model, then a ``tf.while_loop`` that draws a token, feeds it back
alone and carries the recurrent state, ``length`` times; the special tokens are never
drawn, temperature 0 is greedy, and the text is joined the way ``Tokenizer.join`` does
(word level: no space before punctuation). The draws reproduce the Keras path's exactly:
step ``i`` uses the stateless seed ``(random_seed, i)`` and turns the same random bits
into the same uniform numbers that path's XLA-compiled sampler gets (see
:func:`xla_uniform`), so a fixed ``random_seed`` gives the same text as
``seqapp generate --engine tf --random-seed``. The LiteRT graph is the step model alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seqapp.sampling import MAX_TEMPERATURE, MIN_TEMPERATURE
from seqapp.serving import LiteRTGraph, Serving, Tensor, after_checks, convert_litert, portable
from seqapp.tasks.textgen_model import step_model
from seqapp.text import SPECIALS


class TextGenServing(Serving):
    """A textgen run's export."""

    def inputs(self) -> list[Tensor]:
        default = self.run.preprocessing.get("default_seed", "\n")
        return [Tensor("seed", "string[]", f"the text to continue; '' means the run's default seed {default!r}"),
                Tensor("length", "int32[]", "how many tokens to generate (>= 0)"),
                Tensor("temperature", "float32[]", f"sampling temperature: 0 is greedy, else from "
                                                   f"{MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}"),
                Tensor("random_seed", "int64[]", "seed of the random draws: the same seed, the same text")]

    def outputs(self) -> list[Tensor]:
        return [Tensor("text", "string[]", "the seed followed by the generated text")]

    def request(self) -> dict:
        return {"signature_name": "serving_default",
                "inputs": {"seed": "hello", "length": 40, "temperature": 0.8, "random_seed": 1}}

    def assets(self) -> dict[str, Any]:
        return {"vocabulary.json": {**self.run.preprocessing["tokenizer"],
                                    "default_seed": self.run.preprocessing.get("default_seed", "\n")}}

    def notes(self) -> list[str]:
        return ["Tokens the vocabulary lacks read as `<unk>`; a seed without tokens is an error. The text equals "
                "`seqapp generate --engine tf` with the same seed, length, temperature and random seed "
                "(top-k, top-p, `--stop` and `--no-repeat-ngram` are not part of this signature: cut the text "
                "at a stop text yourself, or use `seqapp generate` or `seqapp serve` for those)."]

    def step_model(self) -> Any:
        """The single-step model, sharing the run's trained weights."""
        model = step_model(self.run)
        model.set_weights(self.run.model.get_weights())
        return portable(model)

    def module(self) -> Any:
        import tensorflow as tf

        from seqapp import text_graph

        tokenizer = self.run.preprocessing["tokenizer"]
        default_seed = self.run.preprocessing.get("default_seed", "\n")
        module = tf.Module()
        module.model = self.step_model()
        module.table = text_graph.lookup_table(tokenizer["vocab"])

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="seed"),
                                      tf.TensorSpec([], tf.int32, name="length"),
                                      tf.TensorSpec([], tf.float32, name="temperature"),
                                      tf.TensorSpec([], tf.int64, name="random_seed")])
        def serve(seed: Any, length: Any, temperature: Any, random_seed: Any) -> dict:
            """A seed text -> the seed and ``length`` generated tokens as one string (``serving_default``)."""
            seed = tf.where(tf.equal(seed, ""), default_seed, seed)
            tokens = text_graph.tokenizer_tokens(seed[None], tokenizer)
            tokens, length = after_checks([
                tf.debugging.assert_non_negative(length, message="length must be >= 0"),
                tf.debugging.assert_non_negative(temperature, message="temperature must be >= 0; 0 is greedy"),
                tf.debugging.assert_equal(usable_temperature(temperature), True, message=(
                    f"temperature must be 0 (greedy) or from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}")),
                tf.debugging.assert_positive(tokens.row_lengths()[0], message="the seed has no tokens")],
                (tokens, length))
            seed_ids = tf.ensure_shape(text_graph.encode(tokens, module.table).to_tensor(), [1, None])
            ids = sample(module.model, seed_ids, length, temperature, random_seed)
            return {"text": seed + joined(tokens[0, -1], ids, tokenizer)}

        module.serve = serve
        return module

    def litert(self) -> LiteRTGraph:
        import tensorflow as tf

        model = self.step_model()
        sizes = [int(state.shape[-1]) for state in model.inputs[1:]]
        specs = [tf.TensorSpec([1, None], tf.int32, name="tokens")]
        specs += [tf.TensorSpec([1, size], tf.float32, name=f"state_{i}") for i, size in enumerate(sizes)]
        blob, names = convert_litert(lambda inputs, training=False: model(inputs, training=False), specs)
        states = [Tensor(spec.name, f"float32[1, {size}]", "a recurrent state: zeros for the first call, then the "
                         "matching output of the previous call") for spec, size in zip(specs[1:], sizes)]
        vocab = len(self.run.preprocessing["tokenizer"]["vocab"])
        return LiteRTGraph(
            blob,
            inputs=[Tensor("tokens", "int32[1, T]", "token ids from `vocabulary.json`: the whole seed first, "
                                                    "then one drawn token per call"), *states],
            outputs=[Tensor(names[0], f"float32[1, {vocab}]", "logits of the next token"),
                     *[Tensor(name, state.type, f"the new {state.name}") for name, state in zip(names[1:], states)]],
            usage=["Tokenize the seed as `vocabulary.json` says (unknown: id 1), feed it with zero states, then "
                   "repeat: set the logits of ids 0-3 (special tokens) to -inf, divide by the temperature, draw "
                   "(or take the argmax for temperature 0), and feed the drawn id back with the returned states. "
                   "Join the tokens of `vocab` (word level: a space between words, none before punctuation)."])


def usable_temperature(temperature: Any) -> Any:
    """False for a temperature above 0 that float32 sampling cannot use (``seqapp.sampling.check_options``'s
    rule; a negative one is the other assertion's to refuse)."""
    import tensorflow as tf

    return tf.logical_or(temperature <= 0, tf.logical_and(temperature >= MIN_TEMPERATURE,
                                                          temperature <= MAX_TEMPERATURE))


def xla_uniform(shape: Any, seed: Any) -> Any:
    """``tf.random.stateless_uniform(shape, seed, minval=1e-20, maxval=1.0)`` as XLA computes it.

    The Keras path samples inside an XLA-compiled loop, where the same stateless random bits
    become floats through their high 23 bits, while TensorFlow's own kernel uses the low
    23; a served graph must not need XLA (TensorFlow Serving disables it on CPUs by
    default), so this draws the bits and converts them the XLA way.
    """
    import tensorflow as tf

    bits = tf.random.stateless_uniform(shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32)
    mantissa = tf.bitwise.bitwise_or(tf.bitwise.right_shift(bits, 9), tf.constant(0x3F800000, tf.uint32))
    unit = tf.bitcast(mantissa, tf.float32) - 1.0
    return unit * (1.0 - 1e-20) + 1e-20


def sample(step_model: Any, seed_ids: Any, length: Any, temperature: Any, random_seed: Any) -> Any:
    """``length`` ids drawn after ``seed_ids`` (``[1, T]``), each fed back with the carried state.

    Step ``i`` draws with seed ``(random_seed, i)``, as ``StepFunction.sampler`` does.
    """
    import tensorflow as tf

    states = [tf.zeros([1, int(state.shape[-1])]) for state in step_model.inputs[1:]]
    logits, *states = step_model([seed_ids, *states], training=False)
    banned = tf.constant(np.arange(logits.shape[-1]) < len(SPECIALS))

    def draw(i: Any, logits: Any, states: list, ids: Any) -> tuple:
        """One loop step: mask the specials, draw (or argmax at temperature 0), feed the token back."""
        allowed = tf.where(banned, tf.constant(-np.inf, tf.float32), logits)
        uniform = xla_uniform(tf.shape(allowed), tf.stack([random_seed, tf.cast(i, tf.int64)]))
        noisy = allowed / temperature - tf.math.log(-tf.math.log(uniform))
        token = tf.where(temperature > 0, tf.argmax(noisy, axis=-1, output_type=tf.int32),
                         tf.argmax(allowed, axis=-1, output_type=tf.int32))
        logits, *states = step_model([token[:, None], *states], training=False)
        return i + 1, logits, states, ids.write(i, token[0])

    ids = tf.TensorArray(tf.int32, size=length)
    _, _, _, ids = tf.while_loop(lambda i, *_: i < length, draw, (tf.constant(0), logits, states, ids))
    return ids.stack()


def joined(last_seed_token: Any, ids: Any, tokenizer: dict) -> Any:
    """The text ``ids`` add after the seed (``Tokenizer.piece`` of each token after the one before)."""
    import tensorflow as tf

    from seqapp import text_graph

    vocab = tokenizer["vocab"]
    tokens = tf.gather(tf.constant(vocab), ids)
    if tokenizer["level"] == "char":
        return tf.strings.reduce_join(tokens)
    previous = tf.concat([last_seed_token[None], tokens], axis=0)[:-1]
    space_before = tf.constant(text_graph.space_before(vocab))
    glue = tf.logical_and(text_graph.space_after(previous), tf.gather(space_before, ids))
    return tf.strings.reduce_join(tf.where(glue, " " + tokens, tokens))
