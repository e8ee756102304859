"""Recurrent stacks: one function turns a model config into Keras layers.

Every task builds its recurrent part with :func:`recurrent_stack`, so ``cell``,
``units``, ``layers``, ``dropout`` and ``bidirectional`` mean the same everywhere.
Dropout is a separate ``Dropout`` layer after each recurrent layer (not the cell's own
``dropout`` argument), which keeps the layers eligible for the fused cuDNN kernels on GPU.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

CELL_CLASSES = {"simplernn": "SimpleRNN", "lstm": "LSTM", "gru": "GRU"}


def state_size(cell: str) -> int:
    """How many state tensors one layer of ``cell`` carries (LSTM: h and c)."""
    return 2 if cell == "lstm" else 1


def recurrent_stack(
    cell: str,
    units: int,
    layers: int = 1,
    dropout: float = 0.0,
    bidirectional: bool = False,
    return_sequences: bool = False,
    return_state: bool = False,
    name: str = "rnn",
) -> list[keras.layers.Layer]:
    """Layers for ``layers`` stacked recurrent layers of ``cell`` with ``units`` each.

    All layers but the last return sequences (the next layer needs them); the last one
    returns sequences only if ``return_sequences``. With ``return_state`` every
    recurrent layer also returns its final state, for stateful step-by-step decoding.
    """
    import keras

    cell_class = getattr(keras.layers, CELL_CLASSES[cell])
    stack = []
    for i in range(layers):
        rnn = cell_class(
            units,
            return_sequences=return_sequences or i < layers - 1,
            return_state=return_state,
            name=f"{name}_{cell}_{i}",
        )
        if bidirectional:
            rnn = keras.layers.Bidirectional(rnn, name=f"{name}_bidirectional_{i}")
        stack.append(rnn)
        if dropout > 0:
            stack.append(keras.layers.Dropout(dropout, name=f"{name}_dropout_{i}"))
    return stack


def output_head(units: int, activation: str | None = None, name: str = "head") -> keras.layers.Layer:
    """The model's last Dense layer, always computing in float32.

    Under ``train.mixed_precision`` the other layers compute in float16 or bfloat16; the
    logits and probabilities stay float32, because a softmax or cross-entropy in 16 bits
    loses the small probabilities and overflows on large logits (Keras's own advice).
    """
    import keras

    return keras.layers.Dense(units, activation=activation, dtype="float32", name=name)


def output_layer(model: Any) -> Any:
    """The model's output head: its last Dense layer (see :func:`output_head`)."""
    import keras

    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][-1]


_FEATURES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def head_features(model: Any) -> Any:
    """A model (made once per ``model``, sharing its layers) from ``model``'s inputs to what its
    output head reads; with :func:`head_logits` it gives the logits a temperature divides,
    from any saved model, without changing what it loads as."""
    import keras

    if model not in _FEATURES:
        _FEATURES[model] = keras.Model(model.input, output_layer(model).input, name=f"{model.name}_features")
    return _FEATURES[model]


def head_logits(model: Any, features: Any) -> np.ndarray:
    """The output head's pre-activation (logits, float64) for ``features`` from :func:`head_features`."""
    head = output_layer(model)
    return np.asarray(features, np.float64) @ np.asarray(head.kernel, np.float64) + np.asarray(head.bias, np.float64)


def calibrated(model: Any, temperature: float) -> Any:
    """``model`` with its logits divided by ``temperature`` before the head's sigmoid or softmax:
    a callable like the model (inputs -> probabilities) for graphs that are traced (LiteRT,
    SavedModel); ``model`` itself at temperature 1."""
    import keras

    if temperature == 1.0:
        return model
    head, features = output_layer(model), head_features(model)

    def probabilities(inputs: Any, training: bool = False) -> Any:
        x = keras.ops.cast(features(inputs, training=training), "float32")
        return head.activation((keras.ops.matmul(x, head.kernel) + head.bias) / temperature)

    return probabilities


def is_recurrent(layer: Any) -> bool:
    """True for RNN layers (and Bidirectional wrappers) as made by recurrent_stack."""
    import keras

    return isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional))


def apply_stack(stack: Sequence[Any], x: Any,
                initial_states: Sequence[Sequence[Any]] | None = None) -> tuple[Any, list]:
    """Call ``stack`` on ``x``; return the output and each recurrent layer's final states.

    ``initial_states`` holds one list of state tensors per recurrent layer; the states are
    only returned (and only accepted) when the layers were built with ``return_state``.
    """
    states: list[list[Any]] = []
    for layer in stack:
        if is_recurrent(layer) and getattr(layer, "return_state", False):
            init = list(initial_states[len(states)]) if initial_states is not None else None
            out = layer(x, initial_state=init)
            x = out[0]
            states.append(list(out[1:]))
        else:
            x = layer(x)
    return x, states


def flatten(nested: Sequence[Sequence[Any]]) -> list:
    """One flat list from a list of lists (recurrent states per layer)."""
    return [item for inner in nested for item in inner]


def stateful_step(stack: Sequence[Any], x: Any, cell: str, units: int, layers: int) -> tuple[Any, list, list]:
    """Wire ``stack`` for step-by-step use: new state inputs in, final states out.

    Returns the stack's output, the flat list of ``keras.Input`` state tensors (per layer:
    h, or h and c for LSTM) and the flat list of new states, in the same order. Every
    single-step model (generation, forecasting, the translation decoder) is built with
    this, so a :class:`seqapp.sampling.StepFunction` can drive any of them.
    """
    inputs = state_inputs(cell, units, layers)
    x, states = apply_stack(stack, x, inputs)
    return x, flatten(inputs), flatten(states)


def state_inputs(cell: str, units: int, layers: int) -> list[list[Any]]:
    """``keras.Input`` tensors for the recurrent states of each of ``layers`` layers."""
    import keras

    return [[keras.Input((units,), name=f"state_{layer}_{i}") for i in range(state_size(cell))]
            for layer in range(layers)]
