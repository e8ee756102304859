"""``seqapp export`` of a sentiment run: raw texts in, labels and probabilities out.

The graph does what :func:`seqapp.tasks.sentiment.class_probabilities` does: the run's
tokenizer (:mod:`seqapp.text_graph`), the first ``max_len`` tokens of each text, a text
with no tokens read as one unknown token, padding after the text to the longest in the
request (masked, so it changes no prediction), the classifier, and a two-class sigmoid
spread into two probabilities. The LiteRT graph is the classifier alone, on token ids. A
calibrated run's temperature divides the logits before the sigmoid or softmax in both.
"""

from __future__ import annotations

from typing import Any

from seqapp.layers import calibrated
from seqapp.serving import LiteRTGraph, Serving, Tensor, convert_litert
from seqapp.tasks.base import temperature
from seqapp.text import OOV_ID, PAD_ID


class SentimentServing(Serving):
    """A sentiment run's export."""

    @property
    def classes(self) -> list[str]:
        """The labels, in the order of the probability columns."""
        return list(self.run.preprocessing["classes"])

    def inputs(self) -> list[Tensor]:
        return [Tensor("texts", "string[N]", "the texts to classify (UTF-8)")]

    def outputs(self) -> list[Tensor]:
        return [Tensor("labels", "string[N]", "the most probable label of each text"),
                Tensor("probabilities", f"float32[N, {len(self.classes)}]", self.probability_meaning())]

    def probability_meaning(self) -> str:
        """What the probability columns are (both formats say the same)."""
        return f"the probability of each label, in the order of `labels.json`: {', '.join(self.classes)}"

    def request(self) -> dict:
        return {"signature_name": "serving_default", "instances": ["what a lovely film", "It broke after ONE day!!"]}

    def assets(self) -> dict[str, Any]:
        prep = self.run.preprocessing
        return {"vocabulary.json": {**prep["tokenizer"], "max_len": prep["max_len"]}, "labels.json": self.classes}

    def notes(self) -> list[str]:
        return [f"Each text is read as its first {self.run.preprocessing['max_len']} tokens (the training "
                "max_len); a text with no tokens (empty) as one unknown token. Labels and probabilities "
                f"equal `seqapp predict`'s.{self.calibration()}"]

    def calibration(self) -> str:
        """A README sentence on the run's temperature (empty for a run that has none)."""
        scale = temperature(self.run.preprocessing)
        return (f" The probabilities are calibrated: the logits are divided by the temperature {scale:g} "
                "(fitted on the validation split) before the sigmoid or softmax." if scale != 1.0 else "")

    def classifier(self) -> Any:
        """The run's classifier as a callable (token ids -> probabilities), its temperature included."""
        return calibrated(self.model, temperature(self.run.preprocessing))

    def module(self) -> Any:
        import tensorflow as tf

        from seqapp import text_graph

        prep = self.run.preprocessing
        module = tf.Module()
        module.model = self.model
        classifier = self.classifier()
        module.table = text_graph.lookup_table(prep["tokenizer"]["vocab"])
        classes = tf.constant(self.classes)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="texts")])
        def serve(texts: Any) -> dict:
            """Raw texts -> labels and class probabilities (``serving_default``)."""
            tokens = text_graph.tokenizer_tokens(texts, prep["tokenizer"])
            ids = padded_ids(text_graph.encode(tokens, module.table)[:, :prep["max_len"]])
            probabilities = two_columns(classifier(ids, training=False))
            return {"labels": tf.gather(classes, tf.argmax(probabilities, axis=1)), "probabilities": probabilities}

        module.serve = serve
        return module

    def litert(self) -> LiteRTGraph:
        import tensorflow as tf

        classifier = self.classifier()
        specs = [tf.TensorSpec([1, None], tf.int32, name="tokens")]
        blob, names = convert_litert(
            lambda inputs, training=False: two_columns(classifier(inputs[0], training=False)), specs)
        prep = self.run.preprocessing
        return LiteRTGraph(
            blob,
            inputs=[Tensor("tokens", "int32[1, T]", f"the token ids of one text, from `vocabulary.json` "
                                                    f"(1 <= T <= {prep['max_len']})")],
            outputs=[Tensor(names[0], f"float32[1, {len(self.classes)}]",
                            self.probability_meaning() + self.calibration())],
            usage=["To make `tokens` from a text, split it as `vocabulary.json` says (`level` char or word; "
                   "words by the regular expression `\\n|\\w+(?:['’]\\w+)*|[^\\w\\s]`; `lower`; "
                   "`strip_punctuation`), map each token to its index in `vocab` (unknown: 1), keep the first "
                   f"{prep['max_len']}, and read a text without tokens as [1]. One text per call: resize the input "
                   "to [1, T] with `resize_tensor_input` first."])


def padded_ids(ids: Any) -> Any:
    """A ragged ``[N, (T)]`` batch of ids as a dense one, a row without ids read as ``[OOV_ID]``."""
    import tensorflow as tf

    empty = ids.row_lengths() == 0
    dense = ids.to_tensor(default_value=PAD_ID)
    dense = tf.pad(dense, [[0, 0], [0, tf.maximum(1 - tf.shape(dense)[1], 0)]])  # at least one column
    first = tf.equal(tf.range(tf.shape(dense)[1]), 0)[None, :]
    return tf.where(tf.logical_and(empty[:, None], first), tf.constant(OOV_ID, tf.int32), dense)


def two_columns(probabilities: Any) -> Any:
    """Class probabilities ``[N, C]``: a binary classifier's one sigmoid column ``p`` becomes ``[1 - p, p]``."""
    import tensorflow as tf

    if probabilities.shape[-1] == 1:
        return tf.concat([1.0 - probabilities, probabilities], axis=1)
    return probabilities
