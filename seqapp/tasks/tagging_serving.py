"""``seqapp export`` of a tagging run: raw sentences in, one tag per token out.

The graph does what :meth:`seqapp.tasks.tagging.Tagging.predict` does: the treebank
splitter (``tagging_data.split_tokens``, in :mod:`seqapp.text_graph`), word ids of the
(lower-cased) tokens, character ids of each token framed by ``<s>`` and ``</s>`` with a
long word's start and end kept (``tagging_data.Encoder.char_ids``), padding after each
sentence (masked), the tagger and the most probable tag of every token. Sentences come
back padded to the longest in the request, with their lengths. The LiteRT graph is the
tagger alone, on word and character ids; a calibrated run's temperature divides its logits
before the softmax (it changes the probabilities, never a tag, so the tags of the SavedModel
need no temperature).
"""

from __future__ import annotations

from typing import Any

from seqapp.layers import calibrated
from seqapp.serving import LiteRTGraph, Serving, Tensor, convert_litert
from seqapp.tasks.base import temperature
from seqapp.text import END_ID, PAD_ID, START_ID


class TaggingServing(Serving):
    """A tagging run's export."""

    def inputs(self) -> list[Tensor]:
        return [Tensor("texts", "string[N]", "raw sentences, split into tokens inside the graph")]

    def outputs(self) -> list[Tensor]:
        return [Tensor("tokens", "string[N, L]", "the tokens of each sentence, padded with '' to the longest (L)"),
                Tensor("tags", "string[N, L]", "the tag of each token (from `tags.json`), '' on padding"),
                Tensor("lengths", "int32[N]", "the number of tokens of each sentence")]

    def request(self) -> dict:
        return {"signature_name": "serving_default", "instances": ["The cat sat on the mat.", "I didn't see Dr. Smith"]}

    def assets(self) -> dict[str, Any]:
        prep = self.run.preprocessing
        vocabulary = {key: prep[key] for key in ("word_vocab", "lower", "char_vocab", "max_word_len")}
        return {"vocabulary.json": vocabulary, "tags.json": list(prep["tags"])}

    def notes(self) -> list[str]:
        return ["Tokens are split as `seqapp predict` splits them: punctuation alone, clitics apart "
                "(`did n't`, `Anna 's`), titles, abbreviations and numbers kept whole (`Dr.`, `U.S.`, `3.5`). "
                "An empty text has no tokens (length 0). Tags equal `seqapp predict`'s."]

    def module(self) -> Any:
        import tensorflow as tf

        from seqapp import text_graph

        prep = self.run.preprocessing
        module = tf.Module()
        module.model = self.model
        module.words = text_graph.lookup_table(prep["word_vocab"])
        if prep["char_vocab"]:
            module.chars = text_graph.lookup_table(prep["char_vocab"])
        tags = tf.constant(list(prep["tags"]) + [""])  # the last: padding

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def serve(texts: Any) -> dict:
            """Raw sentences -> padded tokens, their tags and the sentence lengths (``serving_default``)."""
            tokens = text_graph.treebank_tokens(texts)
            lengths = tf.cast(tokens.row_lengths(), tf.int32)
            features = self.features(module, tokens)
            tag_ids = tf.argmax(module.model(features, training=False), axis=-1, output_type=tf.int32)
            steps = tf.range(tf.shape(tag_ids)[1])[None, :]
            tag_ids = tf.where(steps < lengths[:, None], tag_ids, len(prep["tags"]))
            return {"tokens": tokens.to_tensor(default_value="", shape=tf.shape(tag_ids, out_type=tf.int64)),
                    "tags": tf.gather(tags, tag_ids), "lengths": lengths}

        module.serve = serve
        return module

    def tagger(self) -> Any:
        """The run's tagger as a callable (word and character ids -> tag probabilities), its
        temperature included."""
        return calibrated(self.model, temperature(self.run.preprocessing))

    def features(self, module: Any, tokens: Any) -> dict:
        """The tagger's inputs for a ragged ``[N, (T)]`` batch of tokens, at least one step wide."""
        import tensorflow as tf

        from seqapp import text_graph

        prep = self.run.preprocessing
        keys = tf.strings.lower(tokens, encoding="utf-8") if prep["lower"] else tokens
        count = tf.shape(tokens.row_lengths(), out_type=tf.int64)[0]
        width = tf.maximum(tf.reduce_max(tokens.row_lengths()), 1)  # a batch of empty texts: one padded step
        words = text_graph.encode(keys, module.words).to_tensor(PAD_ID, shape=tf.stack([count, width]))
        features = {"words": words}
        if prep["char_vocab"]:
            chars = text_graph.encode(tf.strings.unicode_split(text_graph.clean(tokens), "UTF-8"), module.chars)
            rows = char_rows(chars.values, prep["max_word_len"])  # one row per token of the batch
            shape = tf.stack([count, width, prep["max_word_len"]])
            features["chars"] = tokens.with_flat_values(rows).to_tensor(PAD_ID, shape=shape)
        return features

    def litert(self) -> LiteRTGraph:
        import tensorflow as tf

        prep = self.run.preprocessing
        tagger = self.tagger()
        specs = [tf.TensorSpec([1, None], tf.int32, name="words")]
        if prep["char_vocab"]:
            specs.append(tf.TensorSpec([1, None, prep["max_word_len"]], tf.int32, name="chars"))
        names = [spec.name for spec in specs]
        blob, outputs = convert_litert(
            lambda inputs, training=False: tagger(dict(zip(names, inputs)), training=False), specs)
        inputs = [Tensor("words", "int32[1, T]", "the ids in `word_vocab` of the (lower-cased, if `lower`) "
                                                 "tokens of one sentence; unknown: 1")]
        if prep["char_vocab"]:
            inputs.append(Tensor("chars", f"int32[1, T, {prep['max_word_len']}]",
                                 "per token: 2 (start), the ids in `char_vocab` of its characters, 3 (end), then "
                                 "0; a longer word keeps its first and last characters"))
        calibration = (f" (calibrated: the logits divided by the temperature {temperature(prep):g})"
                       if temperature(prep) != 1.0 else "")
        return LiteRTGraph(blob, inputs, [Tensor(outputs[0], f"float32[1, T, {len(prep['tags'])}]",
                                                 f"tag probabilities per token, in the order of `tags.json`"
                                                 f"{calibration}")],
                           usage=["Split each sentence into tokens the way `seqapp predict` does (the README of a "
                                  "saved_model export says how), look them up as above, one sentence per call "
                                  "(resize the inputs to its length with `resize_tensor_input`)."])


def char_rows(chars: Any, width: int) -> Any:
    """Per token (a ragged ``[tokens, (chars)]`` batch of ids): a ``[tokens, width]`` row of
    ``<s>``, the ids and ``</s>``, padded with 0; a longer word keeps its first ``width // 2``
    ids and its last ``width - width // 2`` (``Encoder.char_ids``)."""
    import tensorflow as tf

    count = tf.shape(chars.row_lengths())[0]
    starts = tf.RaggedTensor.from_tensor(tf.fill([count, 1], START_ID))
    ends = tf.RaggedTensor.from_tensor(tf.fill([count, 1], END_ID))
    framed = tf.concat([starts, chars, ends], axis=1)
    lengths = tf.cast(framed.row_lengths(), tf.int32)[:, None]
    dense = framed.to_tensor(PAD_ID)
    dense = tf.pad(dense, [[0, 0], [0, tf.maximum(width - tf.shape(dense)[1], 0)]])
    columns = tf.range(width)[None, :]
    head = width // 2
    index = tf.where((lengths > width) & (columns >= head), lengths - width + columns, columns)
    rows = tf.gather(dense, index, batch_dims=1)
    return tf.where(columns < lengths, rows, PAD_ID)
