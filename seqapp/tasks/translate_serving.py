"""``seqapp export`` of a translate run: raw source sentences in, translations out.

The graph does what ``seqapp predict`` does with greedy decoding (``--beam 1``, the
default), i.e. :meth:`seqapp.tasks.translate_decoding.Translator.decode_ids` with
:func:`~seqapp.tasks.translate_decoding.greedy_search`: the run's source tokenizer
(:mod:`seqapp.text_graph`; the first ``max_len`` tokens of each sentence, and a sentence
without tokens as one padding id, as ``Translator.source_ids`` makes them), padding after
each sentence to the longest in the request, the encoder run once, then a ``tf.while_loop``
over the one-step decoder that takes the most likely token (the banned ids never), feeds it
back with the carried state and stops when every sentence has produced ``</s>`` or after
the run's ``max_len`` tokens. The tokens up to ``</s>`` are joined with the run's learned
punctuation spacing (:func:`seqapp.tasks.translate.detokenizer`): every rule there depends
on one token only, so it becomes per-id tables and the join is exact.

LiteRT is refused: the encoder and the decoder step are two graphs, which ``seqapp train``
already saves in the run's ``litert/`` folder for the fast engine.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from seqapp.serving import Serving, Tensor, portable
from seqapp.tasks.translate_decoding import BANNED_IDS
from seqapp.tasks.translate_model import memory_count, trained_inference_models
from seqapp.text import END_ID, NO_SPACE_AFTER, NO_SPACE_BEFORE, PAD_ID, SPECIALS, START_ID


class TranslateServing(Serving):
    """A translate run's export."""

    unsupported: ClassVar[dict[str, str]] = {
        "litert": "its encoder and decoder step are two graphs, which training saves in the run's litert/ "
                  "folder for seqapp predict --engine litert"}

    def inputs(self) -> list[Tensor]:
        return [Tensor("texts", "string[N]", "the source sentences to translate (UTF-8)")]

    def outputs(self) -> list[Tensor]:
        return [Tensor("translations", "string[N]", "the greedy translation of each sentence")]

    def request(self) -> dict:
        return {"signature_name": "serving_default", "instances": ["I am cold.", "Where is the station?"]}

    def assets(self) -> dict[str, Any]:
        prep = self.run.preprocessing
        return {"source_vocabulary.json": prep["source_tokenizer"],
                "target_vocabulary.json": {**prep["target_tokenizer"], "spacing": prep.get("target_spacing", {})},
                "decoding.json": {"max_len": prep["max_len"], "search": "greedy",
                                  "banned_ids": list(BANNED_IDS), "end_id": END_ID}}

    def notes(self) -> list[str]:
        max_len = self.run.preprocessing["max_len"]
        return [f"Greedy decoding, at most {max_len} tokens per translation (the training max_len); a source "
                f"is read as its first {max_len} tokens, and source words the vocabulary lacks as `<unk>`. "
                "Translations equal `seqapp predict`'s (beam 1, the default); beam search is not part of this "
                "signature, nor are `seqapp predict`'s other decoding options (`--n-best`, `--length-penalty`, "
                "`--max-len`, `--no-repeat-ngram`, `--replace-unk`): use `seqapp predict` or `seqapp serve` for "
                "those."]

    def models(self) -> tuple[Any, Any]:
        """The encoder and the one-step decoder, sharing the run's trained weights, on portable kernels."""
        encoder, step = trained_inference_models(self.run)
        return portable(encoder), portable(step)

    def module(self) -> Any:
        import tensorflow as tf

        from seqapp import text_graph
        prep = self.run.preprocessing
        module = tf.Module()
        module.encoder, module.step = self.models()
        module.table = text_graph.lookup_table(prep["source_tokenizer"]["vocab"])
        memories = memory_count(self.run.config.model)
        target = prep["target_tokenizer"]
        spacing = spacing_tables(target, prep.get("target_spacing", {}))

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def serve(texts: Any) -> dict:
            """Source sentences -> greedy translations (``serving_default``)."""
            tokens = text_graph.tokenizer_tokens(texts, prep["source_tokenizer"])
            ids = text_graph.encode(tokens, module.table)[:, :prep["max_len"]].to_tensor(default_value=PAD_ID)
            ids = tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])  # at least one column
            outputs = module.encoder(ids, training=False)
            # tf.identity drops the Keras masks the outputs carry, which the step model would warn about
            outputs = [tf.identity(output) for output in tf.nest.flatten(outputs)]
            context = [*outputs[:memories], tf.not_equal(ids, PAD_ID)] if memories else []
            found = greedy_ids(module.step, context, outputs[memories:], prep["max_len"], len(target["vocab"]))
            return {"translations": joined(found, target["vocab"], spacing)}

        module.serve = serve
        return module


def greedy_ids(step: Any, context: list, states: list, max_len: int, vocab_size: int) -> Any:
    """``greedy_search`` in the graph: ids ``[N, steps]``, ``PAD_ID`` after a row's ``END_ID``.

    Like the numpy search it takes the argmax of a float64 log-softmax of the logits (so
    near-ties break the same way), never a banned id, and stops once every row is finished
    or after ``max_len`` steps.
    """
    import tensorflow as tf

    banned = tf.constant(np.isin(np.arange(vocab_size), BANNED_IDS))

    def one_step(i: Any, tokens: Any, finished: Any, states: list, produced: Any) -> tuple:
        """Feed the previous tokens, take the best allowed next one (padding once finished)."""
        logits, *rest = step([tokens[:, None], *context, *states], training=False)
        logits = tf.cast(logits, tf.float64)
        shifted = logits - tf.reduce_max(logits, axis=-1, keepdims=True)
        log_probs = shifted - tf.math.log(tf.reduce_sum(tf.exp(shifted), axis=-1, keepdims=True))
        best = tf.argmax(tf.where(banned, tf.constant(-np.inf, tf.float64), log_probs), axis=-1,
                         output_type=tf.int32)
        best = tf.where(finished, tf.constant(PAD_ID, tf.int32), best)
        return i + 1, best, finished | tf.equal(best, END_ID), rest[:len(states)], tf.concat(
            [produced, best[:, None]], axis=1)

    batch = tf.shape(states[0])[0]
    start = (tf.constant(0), tf.fill([batch], tf.constant(START_ID, tf.int32)), tf.zeros([batch], tf.bool),
             list(states), tf.zeros([batch, 0], tf.int32))
    invariants = tf.nest.map_structure(lambda value: tf.TensorShape(value.shape), start)
    invariants = (*invariants[:4], tf.TensorShape([None, None]))  # one more column per step
    return tf.while_loop(lambda i, tokens, finished, *_: tf.logical_and(i < max_len, ~tf.reduce_all(finished)),
                         one_step, start, shape_invariants=invariants)[-1]


def spacing_tables(tokenizer: dict, rules: dict) -> dict[str, list[bool]]:
    """Per target id, the facts :func:`seqapp.tasks.translate.detokenizer` decides a space by.

    Its ``spaced(previous, token)`` is: no space if ``previous`` is in ``after_no_space`` or
    ``token`` in ``before_no_space``; else a space if ``previous`` is in ``after_space`` or
    ``token`` in ``before_space``; else ``Tokenizer.join``'s rule, a space unless ``previous``
    ends in a ``NO_SPACE_AFTER`` character or ``token`` is in ``NO_SPACE_BEFORE`` or a line
    break. Each test looks at one token, so each is a table over the vocabulary. Character
    level never spaces (``"".join``); word level without rules is ``Tokenizer.join``.
    """
    vocab = tokenizer["vocab"]
    sets = {key: set(rules.get(key, [])) for key in ("after_no_space", "before_no_space", "after_space",
                                                     "before_space")}
    if tokenizer["level"] == "char":
        return {key: [False] * len(vocab) for key in (*sets, "join_after", "join_before")}
    return {**{key: [token in tokens for token in vocab] for key, tokens in sets.items()},
            "join_after": [token[-1:] not in NO_SPACE_AFTER for token in vocab],
            "join_before": [token not in NO_SPACE_BEFORE and token != "\n" for token in vocab]}


def joined(ids: Any, vocab: list[str], tables: dict[str, list[bool]]) -> Any:
    """The text of each row of ``ids`` (``Tokenizer.tokens``, then the detokenizer): the tokens
    before the first ``END_ID``, specials dropped, each after the previous kept one with a
    space where the spacing tables say so."""
    import tensorflow as tf

    kept = tf.logical_and(tf.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=1) == 0, ids >= len(SPECIALS))
    rows = tf.ragged.boolean_mask(ids, kept)
    starts = tf.RaggedTensor.from_tensor(tf.fill([rows.nrows(), 1], START_ID))
    previous = tf.concat([starts, rows], axis=1)[:, :-1]  # START before each row's first token

    def table(name: str, of: Any) -> Any:
        return tf.ragged.map_flat_values(tf.gather, tf.constant(tables[name]), of)

    spaced = tf.where(
        table("after_no_space", previous).flat_values | table("before_no_space", rows).flat_values, False,
        table("after_space", previous).flat_values | table("before_space", rows).flat_values
        | (table("join_after", previous).flat_values & table("join_before", rows).flat_values))
    first = tf.equal(previous.flat_values, START_ID)
    spaced = spaced & ~first
    tokens = tf.gather(tf.constant(vocab), rows.flat_values)
    pieces = rows.with_flat_values(tf.where(spaced, " " + tokens, tokens))
    return tf.strings.reduce_join(pieces, axis=1)
