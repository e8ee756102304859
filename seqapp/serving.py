"""What a task exports: the :class:`Serving` protocol and the pieces its graphs share.

Each task that can be exported has a ``seqapp/tasks/<task>_serving.py`` with a subclass of
:class:`Serving`: graphs that take raw inputs (the tokenizer and decoding inside), the files
shipped beside them and how to call them. ``seqapp export`` (:mod:`seqapp.exporting`) writes
whatever a :class:`Serving` gives, without knowing the task. Here too: :func:`portable` (no
cuDNN-only kernels in an export), :func:`after_checks` and :func:`convert_litert`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from seqapp.errors import SeqappError

if TYPE_CHECKING:
    from seqapp.runs import Run


SUBWORD_SAVED_MODEL = ("its subword (SentencePiece) tokenizer is no TensorFlow op that stock TensorFlow Serving "
                       "can run (tensorflow-text's op would tie the model to that package)")
SUBWORD_USAGE = ("Subword vocabulary (`level` subword): make the ids with SentencePiece (`pip install sentencepiece`), "
                 "after `lower` / `strip_punctuation`: `processor = sentencepiece.SentencePieceProcessor("
                 "model_proto=base64.b64decode(vocabulary['sentencepiece']))`, then `processor.encode(text)`; its ids "
                 "are the indices of `vocab`, and `processor.decode(ids)` turns ids back into exact text.")


def subword_tokenizers(preprocessing: dict) -> list[str]:
    """The names of a run's tokenizers (``preprocessing.json`` entries) that are at subword level."""
    return [name for name, value in preprocessing.items()
            if isinstance(value, dict) and value.get("level") == "subword"]


@dataclass
class Tensor:
    """One input or output of an exported graph: its name, type and shape, and what it holds."""

    name: str
    type: str
    meaning: str


@dataclass
class LiteRTGraph:
    """A converted LiteRT graph, its tensors (in the interpreter's order) and how to drive it."""

    blob: bytes
    inputs: list[Tensor]
    outputs: list[Tensor]
    usage: list[str] = field(default_factory=list)


class Serving:
    """What one task exports; a subclass per task in ``seqapp/tasks/<task>_serving.py``.

    Building it is cheap and needs no TensorFlow, so the CLI can refuse a format the task
    cannot export before TensorFlow starts; :meth:`module` and :meth:`litert` build graphs.
    """

    # format -> why this task cannot export it (absent: it can)
    unsupported: ClassVar[dict[str, str]] = {}

    def __init__(self, run: Run) -> None:
        self.run = run
        if subword_tokenizers(run.preprocessing):
            self.unsupported = {**self.unsupported, "saved_model": SUBWORD_SAVED_MODEL}

    def tokenizer_usage(self) -> list[str]:
        """README lines on making ids from text where a graph takes ids (a subword vocabulary needs its step)."""
        return [SUBWORD_USAGE] if subword_tokenizers(self.run.preprocessing) else []

    @property
    def model(self) -> Any:
        """The run's trained model, its recurrent layers on portable kernels (see :func:`portable`)."""
        return portable(self.run.model)

    def inputs(self) -> list[Tensor]:
        """The ``serving_default`` inputs (raw)."""
        raise NotImplementedError

    def outputs(self) -> list[Tensor]:
        """The ``serving_default`` outputs (final)."""
        raise NotImplementedError

    def request(self) -> dict:
        """An example JSON body for TF Serving's REST ``:predict`` endpoint."""
        raise NotImplementedError

    def assets(self) -> dict[str, Any]:
        """JSON-ready files shipped with the model (vocabulary, labels, normalisation), by name."""
        raise NotImplementedError

    def module(self) -> Any:
        """A ``tf.Module`` whose ``serve`` (a ``tf.function`` with an input signature) maps the
        raw inputs to a dict of the outputs; the objects it uses are tracked attributes."""
        raise NotImplementedError

    def litert(self) -> LiteRTGraph:
        """The LiteRT graph (for tasks that do not list ``litert`` in :attr:`unsupported`)."""
        raise NotImplementedError

    def notes(self) -> list[str]:
        """README lines on behaviour worth knowing (padding, sampling, limits)."""
        return []


def portable(model: Any) -> Any:
    """``model`` with every LSTM / GRU layer told not to use cuDNN, which it returns.

    Keras picks the cuDNN kernel when the exporting machine has a GPU, and a graph traced
    with it runs on GPUs only; an export must also serve on CPUs (and convert to LiteRT).
    """
    for layer in model.layers:
        for inner in (layer.forward_layer, layer.backward_layer) if hasattr(layer, "forward_layer") else (layer,):
            if hasattr(inner, "use_cudnn"):
                inner.use_cudnn = False
    return model


def after_checks(checks: Sequence[Any], value: Any) -> Any:
    """``value``, computed only once the ``tf.debugging`` assertions ``checks`` passed.

    Without the dependency the graph may run the model first and fail deep inside it,
    with a message about a slice, instead of the assertion's own message.
    """
    import tensorflow as tf

    with tf.control_dependencies(list(checks)):
        return tf.nest.map_structure(tf.identity, value, expand_composites=True)  # ragged: every part


def convert_litert(function: Callable, specs: Sequence[Any]) -> tuple[bytes, list[str]]:
    """``function`` (called with a list of tensors of ``specs``) as a checked LiteRT graph.

    Returns the flatbuffer and the interpreter's output names in ``function``'s order; a
    graph that does not convert, or does not give ``function``'s outputs, is one error line.
    """
    from seqapp import litert

    try:
        blob = litert.convert(function, specs)
        return blob, litert.check(blob, function, specs)
    except Exception as exc:  # the converter raises many kinds
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise SeqappError(f"this run's graph does not convert to LiteRT ({reason}); use --format saved_model") from None
