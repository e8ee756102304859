"""seqapp.fastrnn: the fast training loop is exact or absent. It gives the stock layers' outputs
and gradients (relative tolerance, realistic sizes, every cell, eager, XLA, Bidirectional,
stateful, masked as Keras masks), every case it does not cover keeps the stock layer, a model
none of whose layers takes it says so, the allocator setting is a step of its own, and nothing
of it is left in a saved model."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from conftest import without_seqapp

# Relative tolerance: each element within RTOL of the stock value, or within ATOL times the
# largest stock value of that array (elements near zero). At T=200 and 256 units the fast
# loop's rounding differs from the stock loop's by at most ~2e-6 of the largest value and
# ~5e-4 of an element's own size, as much as the stock loop eager differs from itself under
# XLA; the bugs this guards against (stale states, other activations) are off by 1e-2 to 1.
RTOL, ATOL = 2e-3, 2e-5
CELLS = ("LSTM", "GRU", "SimpleRNN")
BATCH, STEPS, FEATURES, UNITS = 3, 6, 4, 5  # small: the many combinations of options
REAL = {"batch": 4, "steps": 200, "features": 64, "units": 256}  # T and units as in training


@pytest.fixture
def fast_calls(monkeypatch):
    """How many times the fast loop ran (its counter list grows by one per call)."""
    from seqapp import fastrnn

    calls = []
    real = fastrnn.run_layer

    def counted(*args, **kwargs):
        calls.append(args[0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(fastrnn, "run_layer", counted)
    return calls


@pytest.fixture
def notes(caplog):
    """The messages of the ``seqapp`` logger (info and up) during the test."""
    caplog.set_level(logging.INFO, logger="seqapp")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "seqapp" and "fast_rnn" in r.getMessage()]


def make_layer(kind: str, seed: int, batch=BATCH, steps=STEPS, features=FEATURES, units=UNITS, **options):
    """A built stock layer of ``kind`` with random weights (small sizes: N(0, 0.5) everywhere;
    realistic sizes: Keras's initial weights, as training starts from, with random biases)."""
    import keras

    keras.utils.set_random_seed(seed)
    layer = getattr(keras.layers, kind)(units, **options)
    layer.build((batch, steps, features))
    rng = np.random.default_rng(seed)
    weights = layer.get_weights()
    if units == UNITS:
        weights = [rng.normal(0, 0.5, w.shape) for w in weights]
    else:
        weights[-1] = rng.normal(0, 0.2, weights[-1].shape)
    layer.set_weights([w.astype("float32") for w in weights])
    return layer


def inputs_and_states(kind: str, seed: int, batch=BATCH, steps=STEPS, features=FEATURES, units=UNITS):
    import tensorflow as tf

    rng = np.random.default_rng(100 + seed)
    x = tf.constant(rng.normal(0, 1, (batch, steps, features)), tf.float32)
    states = [tf.constant(rng.normal(0, 0.5, (batch, units)), tf.float32) for _ in range(2 if kind == "LSTM" else 1)]
    return x, states


def weighted_sum(outputs):
    """A loss whose gradient differs from element to element (a plain sum would hide a transposition)."""
    import tensorflow as tf

    return sum(tf.reduce_sum(o * tf.reshape(tf.sin(1.7 * tf.range(tf.size(o), dtype=o.dtype)), tf.shape(o)))
               for o in outputs)


def outputs_and_gradients(layer, x, states, jit: bool = False, mask=None):
    """The layer's outputs (training=True, ``mask`` given when not None) and the gradients of a
    weighted sum of them with respect to the input, the initial states and every weight."""
    import tensorflow as tf

    def run(x, states):
        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            out = layer(x, initial_state=list(states) or None, training=True, mask=mask)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            loss = weighted_sum(outs)
        return outs, tape.gradient(loss, [x, *states, *layer.trainable_variables])

    if jit:
        run = tf.function(run, jit_compile=True)
    return run(x, tuple(states))


def assert_close(got, want):
    assert len(got) == len(want)
    for index, (a, b) in enumerate(zip(got, want)):
        assert a is not None and b is not None
        a, b = np.asarray(a), np.asarray(b)
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL * max(np.abs(b).max(), 1e-6),
                                   err_msg=f"array {index} of {len(want)}")


def compare(layer, x, states, fast_calls, jit=False, mask=None):
    """Stock, then accelerated: the same outputs and gradients, and the fast loop did run."""
    import keras

    from seqapp import fastrnn

    want_out, want_grads = outputs_and_gradients(layer, x, states, jit, mask)
    holder = keras.Sequential([layer])  # accelerate walks a model
    assert fastrnn.accelerate(holder) == [layer]
    try:
        got_out, got_grads = outputs_and_gradients(layer, x, states, jit, mask)
    finally:
        fastrnn.restore(holder)
    assert fast_calls, "the fast loop was not taken"
    assert_close(got_out, want_out)
    assert_close(got_grads, want_grads)


# -- exact: outputs and gradients ------------------------------------------------------


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_outputs_and_gradients_match_the_stock_layer(kind, return_sequences, go_backwards, seed, fast_calls):
    layer = make_layer(kind, seed, return_sequences=return_sequences, go_backwards=go_backwards,
                       return_state=True)
    x, states = inputs_and_states(kind, seed)
    compare(layer, x, states, fast_calls)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("jit", [pytest.param(False, marks=pytest.mark.slow), True], ids=["eager", "xla"])
def test_at_a_realistic_size_outputs_and_gradients_match(kind, jit, fast_calls):
    """T=200, 256 units (batch 4: the batch does not change how rounding adds up over steps).
    XLA, as the templates train, in the default run; eager (4 s a cell) with --runslow."""
    layer = make_layer(kind, 7, **REAL, return_sequences=True, return_state=True)
    x, states = inputs_and_states(kind, 7, **REAL)
    compare(layer, x, states, fast_calls, jit=jit)


SMALL = {"batch": BATCH, "steps": STEPS, "features": FEATURES, "units": UNITS}


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("size, jit", [(SMALL, False), pytest.param(REAL, True, marks=pytest.mark.slow)],
                         ids=["small-eager", "realistic-xla"])
def test_bidirectional_layers_match(kind, size, jit, fast_calls):
    """Both directions take the fast loop and match; at T=200 and 256 units under XLA (6 s a
    cell) with --runslow."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    keras.utils.set_random_seed(4)
    inputs = keras.Input((size["steps"], size["features"]))
    recurrent = getattr(keras.layers, kind)(size["units"], return_sequences=True)
    model = keras.Model(inputs, keras.layers.Bidirectional(recurrent)(inputs))
    x, _ = inputs_and_states(kind, 4, **size)

    def run(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = model(x, training=True)
            loss = weighted_sum([out])
        return [out, *tape.gradient(loss, [x, *model.trainable_variables])]

    want = tf.function(run, jit_compile=True)(x) if jit else run(x)
    assert len(fastrnn.accelerate(model)) == 2
    got = tf.function(run, jit_compile=True)(x) if jit else run(x)
    assert sorted(fast_calls) == sorted(layer.name for layer in fastrnn.recurrent_layers(model))
    assert_close(got, want)


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf.function"])
def test_a_stateful_layer_gets_the_stock_gradients(kind, compiled, fast_calls):
    """The backward pass must see the states a call started from, not the ones Keras assigns
    to the state variables after the call (that was off by up to 1.7)."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    layer = make_layer(kind, 8, stateful=True, return_sequences=True)
    x, _ = inputs_and_states(kind, 8)

    def second_call(x):  # the first call leaves non-zero states behind
        layer(x, training=True)
        with tf.GradientTape() as tape:
            out = layer(2 * x, training=True)
            loss = weighted_sum([out])
        return [out, *tape.gradient(loss, layer.trainable_variables)]

    def run():
        layer.reset_state()
        result = (tf.function(second_call) if compiled else second_call)(x)
        return [*result, *(np.asarray(state) for state in layer.states)]

    want = run()
    holder = keras.Sequential([layer])
    assert fastrnn.accelerate(holder) == [layer]
    got = run()
    fastrnn.restore(holder)
    assert len(fast_calls) == 2
    assert_close(got, want)


@pytest.mark.parametrize("kind, vocabulary, go_backwards",
                         [(kind, 7, False) for kind in CELLS] + [("LSTM", 7, True), ("GRU", 40, False)])
def test_after_an_embedding_the_projected_table_gives_the_same_gradients(kind, vocabulary, go_backwards,
                                                                          monkeypatch, fast_calls):
    """Embedding -> recurrent layer in a traced step: a table with at most half as many rows as
    the batch has tokens (7 < 18 / 2) is projected instead of the rows; a larger one (40) is not.
    Every cell reads the projected table; reversing the ids and the row threshold are shared
    code (project_steps, table_lookup), checked on one cell each."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    looked_up = []
    real = fastrnn.table_lookup
    monkeypatch.setattr(fastrnn, "table_lookup", lambda s: looked_up.append(real(s)) or looked_up[-1])
    keras.utils.set_random_seed(5)
    inputs = keras.Input((STEPS,), dtype="int32")
    hidden = keras.layers.Embedding(vocabulary, FEATURES)(inputs)
    hidden = getattr(keras.layers, kind)(UNITS, return_sequences=True, go_backwards=go_backwards)(hidden)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    ids = tf.constant(np.random.default_rng(5).integers(0, vocabulary, (BATCH, STEPS)), tf.int32)

    @tf.function
    def run(ids):
        with tf.GradientTape() as tape:
            out = model(ids, training=True)
            loss = weighted_sum([out])
        return [out, *(tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables))]

    want = run(ids)
    assert len(fastrnn.accelerate(model)) == 1
    got = tf.function(run.python_function)(ids)
    assert len(fast_calls) == 1 and len(looked_up) == 1
    assert (looked_up[0] is not None) == (vocabulary * 2 <= BATCH * STEPS)
    assert_close(got, want)


# -- masks: Keras's semantics, exact ------------------------------------------------------

MASKED = {"batch": 24, "steps": 48, "features": 32, "units": 96}  # a padded batch as the word-level tasks train


def right_padded(lengths, steps):
    """The (batch, steps) mask of rows of ``lengths`` tokens, padded after them."""
    import tensorflow as tf

    return tf.constant(np.arange(steps)[None, :] < np.asarray(lengths)[:, None])


def varied_lengths(seed: int, batch: int, steps: int, longest: int):
    """``batch`` lengths from 1 to ``longest`` (both there) in random order."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, longest + 1, batch)
    lengths[rng.choice(batch, 2, replace=False)] = [longest, 1]
    return lengths


def realistic_weights(layer, seed: int):
    """Keras's initial weights with random biases (as :func:`make_layer` at realistic sizes)."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.2, w.shape).astype("float32") if w.ndim == 1 else w
                       for w in layer.get_weights()])
    return layer


@pytest.mark.parametrize("kind", CELLS)
def test_with_a_mask_outputs_and_gradients_match_the_stock_layers(kind, fast_calls):
    """Right-padded batches at a realistic size (24 rows, 48 steps, 96 units), traced as the
    word-level tasks train: a Bidirectional layer returning sequences (its backward direction
    starts on the padding) on rows of 1 to 48 steps, and a layer returning its last output and
    states from initial states on rows of 1 to 39 steps (every loop skips the 9 steps no row
    keeps). Outputs and the gradients of the inputs, the initial states and every weight match;
    the other options are checked at small sizes below."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    size = MASKED
    batch, steps, features, units = size["batch"], size["steps"], size["features"], size["units"]
    keras.utils.set_random_seed(13)
    both = keras.layers.Bidirectional(getattr(keras.layers, kind)(units, return_sequences=True))
    both.build((batch, steps, features))
    realistic_weights(both, 13)
    last = make_layer(kind, 12, **size, return_sequences=False, return_state=True)
    masks = [right_padded(varied_lengths(seed, batch, steps, longest), steps)
             for seed, longest in ((0, steps), (1, steps - 9))]
    x, states = inputs_and_states(kind, 11, **size)

    @tf.function
    def run(x, states):
        inputs = [tf.identity(x), tf.identity(x)]  # one gradient of the input per layer
        with tf.GradientTape() as tape:
            tape.watch([*inputs, *states])
            outs = [both(inputs[0], mask=masks[0], training=True),
                    *last(inputs[1], mask=masks[1], initial_state=list(states), training=True)]
            loss = weighted_sum(outs)
        weights = [*both.trainable_variables, *last.trainable_variables]
        return outs, tape.gradient(loss, [*inputs, *states, *weights])

    want = run(x, tuple(states))
    assert len(fastrnn.accelerate(keras.Sequential([both, last]))) == 3
    got = tf.function(run.python_function)(x, tuple(states))
    assert len(fast_calls) == 3
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])


# Not only padding: masked steps before, between and after kept ones, a row with nothing kept;
# the first and last steps are masked in every row, so the loops skip them.
GENERAL_MASK = [[0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0]]


MASK_OPTIONS = {"go_backwards": {"go_backwards": True}, "zero_output": {"zero_output_for_mask": True},
                "both": {"go_backwards": True, "zero_output_for_mask": True}}


@pytest.mark.parametrize("kind, options", [(kind, "forward") for kind in CELLS]
                         + [("GRU", name) for name in MASK_OPTIONS])
@pytest.mark.parametrize("return_sequences", [True, False])
def test_any_mask_and_every_masked_output_option_match(kind, options, return_sequences, fast_calls):
    """Any mask (:data:`GENERAL_MASK`), from initial states and returning the states: every cell
    forward; reversing the mask and ``zero_output_for_mask`` are shared code (kept_steps,
    masked_outputs), checked on one cell."""
    import tensorflow as tf

    layer = make_layer(kind, 14, return_sequences=return_sequences, return_state=True, **MASK_OPTIONS.get(options, {}))
    x, states = inputs_and_states(kind, 14)
    compare(layer, x, states, fast_calls, mask=tf.constant(np.array(GENERAL_MASK, bool)))


@pytest.mark.slow  # 4-7 s a cell; the word-level templates train without XLA (Keras's choice)
@pytest.mark.parametrize("kind", CELLS)
def test_a_mask_under_xla_matches(kind, fast_calls):
    """XLA-compiled (``train.jit_compile: true``): the loops' bounds come from the mask at run time."""
    import tensorflow as tf

    layer = make_layer(kind, 16, return_sequences=True, return_state=True, go_backwards=True)
    x, states = inputs_and_states(kind, 16)
    compare(layer, x, states, fast_calls, jit=True, mask=tf.constant(np.array(GENERAL_MASK, bool)))


@pytest.mark.parametrize("kind", CELLS)
def test_skipping_the_steps_no_row_keeps_changes_nothing(kind, monkeypatch):
    """The loops run only from the first step any row keeps to the last: the states of every
    step and the gradients of all inputs (those of the skipped steps' states included, which
    a layer's outputs never show) equal those of loops over every step."""
    import tensorflow as tf

    from seqapp import fastrnn

    rng = np.random.default_rng(15)
    units, gates = UNITS, {"LSTM": 4, "GRU": 3, "SimpleRNN": 1}[kind] * UNITS
    xg = tf.constant(rng.normal(0, 1, (STEPS, BATCH, gates)), tf.float32)
    h0, c0 = (tf.constant(rng.normal(0, 0.5, (BATCH, units)), tf.float32) for _ in range(2))
    recurrent = tf.constant(rng.normal(0, 0.5, (units, gates)), tf.float32)
    recurrent_bias = tf.constant(rng.normal(0, 0.5, (gates,)), tf.float32)
    keep = tf.constant(np.array(GENERAL_MASK, bool).T[:, :, None])
    inputs = {"LSTM": [xg, h0, c0, recurrent], "GRU": [xg, h0, recurrent, recurrent_bias],
              "SimpleRNN": [xg, h0, recurrent]}[kind]
    sequence = {"LSTM": fastrnn.lstm_sequence, "GRU": fastrnn.gru_sequence, "SimpleRNN": fastrnn.simple_sequence}[kind]

    def run():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            out = sequence(*inputs, keep=keep)
            outs = list(out) if isinstance(out, tuple) else [out]
            loss = weighted_sum(outs)
        return [*outs, *tape.gradient(loss, inputs)]

    skipping = run()
    monkeypatch.setattr(fastrnn.Span, "bounds", staticmethod(lambda keep, steps: (tf.constant(0), steps - 1)))
    assert_close(skipping, run())


def test_a_mask_in_the_graph_takes_the_fast_loop(fast_calls, notes):
    """Embedding(mask_zero=True), then a stack of every cell, plain and Bidirectional (the mask
    goes on through the layers that return sequences), as the word-level tasks build them: each
    layer takes the fast loop, and the outputs and the gradients of every weight match, with no note."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    keras.utils.set_random_seed(5)
    tokens = keras.Input((STEPS,), dtype="int32")
    hidden = keras.layers.Embedding(10, FEATURES, mask_zero=True)(tokens)
    for kind, sequences, bidirectional in (("GRU", True, True), ("LSTM", True, False), ("SimpleRNN", False, True)):
        layer = getattr(keras.layers, kind)(UNITS, return_sequences=sequences)
        hidden = (keras.layers.Bidirectional(layer) if bidirectional else layer)(hidden)
    model = keras.Model(tokens, hidden)
    padded = tf.constant([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])

    def run():
        with tf.GradientTape() as tape:
            out = model(padded, training=True)
            loss = weighted_sum([out])
        return [out, *(tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables))]

    want = run()
    accelerated = fastrnn.accelerate(model)
    assert len(accelerated) == 5
    got = run()
    assert sorted(fast_calls) == sorted(layer.name for layer in accelerated)
    assert_close(got, want)
    assert not notes()


# -- absent: what the fast loop does not cover keeps the stock layer ------------------------


def tanh(x):
    """A custom activation that only shares tanh's name (as the review's counter-example)."""
    import keras

    return keras.ops.tanh(2 * x)


def sigmoid(x):
    """A custom recurrent activation that only shares sigmoid's name."""
    import keras

    return keras.ops.sigmoid(x) * 0.9


class Subclassed:
    """Marker: make the layer of a subclass of the stock class (it may change the maths)."""


REFUSED = {  # name -> options; what each cell has
    "unroll": {"unroll": True},
    "dropout": {"dropout": 0.3},
    "recurrent_dropout": {"recurrent_dropout": 0.3},
    "no bias": {"use_bias": False},
    "relu": {"activation": "relu"},
    "a custom function named tanh": {"activation": tanh},
    "mixed precision": {"dtype": "mixed_bfloat16"},
    "a subclass": {"subclass": Subclassed},
}
GATED = {  # LSTM and GRU only
    "hard_sigmoid": {"recurrent_activation": "hard_sigmoid"},
    "a custom function named sigmoid": {"recurrent_activation": sigmoid},
}
REFUSALS = ([(kind, name) for kind in CELLS for name in REFUSED]
            + [(kind, name) for kind in ("LSTM", "GRU") for name in GATED] + [("GRU", "reset_after=False")])


def refused_layer(kind: str, name: str):
    import keras

    options = {**REFUSED, **GATED, "reset_after=False": {"reset_after": False}}[name]
    cls = getattr(keras.layers, kind)
    if options.get("subclass"):
        cls, options = type(f"My{kind}", (cls,), {}), {}
    return cls(UNITS, return_sequences=True, **options)


@pytest.mark.parametrize("kind, name", REFUSALS)
def test_layers_the_fast_loop_does_not_cover_stay_stock_and_say_so(kind, name, fast_calls, notes):
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    layer = refused_layer(kind, name)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), layer])
    assert fastrnn.unsupported(layer) is not None
    assert fastrnn.accelerate(model) == []
    assert "inner_loop" not in vars(layer) and fastrnn.recurrent_layers(model) == [layer]
    model(tf.ones((BATCH, STEPS, FEATURES)), training=True)
    assert not fast_calls
    assert len(notes()) == 1 and layer.name in notes()[0], notes()


@pytest.mark.parametrize("kind", CELLS)
def test_with_initial_states_keras_passes_no_mask_and_the_fast_loop_runs(kind, fast_calls, notes):
    """After Embedding(mask_zero=True) but called with ``initial_state`` (a decoder), Keras hands
    the layer no mask, so the fast loop runs, with the stock layer's outputs."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    keras.utils.set_random_seed(5)
    tokens = keras.Input((STEPS,), dtype="int32")
    states = [keras.Input((UNITS,)) for _ in range(2 if kind == "LSTM" else 1)]
    recurrent = getattr(keras.layers, kind)(UNITS, return_sequences=True)
    hidden = keras.layers.Embedding(10, FEATURES, mask_zero=True)(tokens)
    model = keras.Model([tokens, *states], recurrent(hidden, initial_state=states))
    feed = [tf.constant([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]]),
            *[tf.random.normal((3, UNITS)) for _ in states]]
    want = model(feed, training=True)
    assert fastrnn.accelerate(model) == [recurrent]
    assert_close([model(feed, training=True)], [want])
    assert fast_calls and not notes()


def test_a_mask_of_another_shape_and_inference_take_the_stock_loop(fast_calls, notes):
    """A mask not of shape (batch, time) (Keras takes (batch, time, 1) too) and inference run
    Keras's own loop; the first training call that falls back, with no layer running fast, is
    noted once. The choice is shared by every cell."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    layer = make_layer("LSTM", 9, return_sequences=True)
    x, _ = inputs_and_states("LSTM", 9)
    mask = tf.constant(np.array(GENERAL_MASK, bool))
    want = [layer(x, mask=mask[:, :, None], training=True), layer(x, mask=mask[:, :, None], training=True),
            layer(x, mask=mask)]
    assert fastrnn.accelerate(keras.Sequential([layer])) == [layer]
    got = [layer(x, mask=mask[:, :, None], training=True), layer(x, mask=mask[:, :, None], training=True),
           layer(x, mask=mask)]
    assert_close(got, want)
    assert not fast_calls
    assert len(notes()) == 1 and "a mask of shape (3, 6, 1)" in notes()[0], notes()
    layer(x, mask=mask, training=True)
    assert fast_calls == [layer.name]


@pytest.mark.parametrize("kind", CELLS)
def test_on_a_gpu_nothing_changes(kind, monkeypatch, notes):
    """Keras uses cuDNN there; not a case to note."""
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    layer = getattr(keras.layers, kind)(UNITS)
    assert fastrnn.accelerate(keras.Sequential([keras.Input((STEPS, FEATURES)), layer])) == []
    assert "inner_loop" not in vars(layer) and not notes()


def test_no_note_while_one_layer_takes_the_fast_loop(fast_calls, notes):
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.GRU(UNITS, return_sequences=True),
                              keras.layers.LSTM(UNITS, dropout=0.2)])
    assert fastrnn.accelerate(model) == [model.layers[0]]
    model(tf.ones((BATCH, STEPS, FEATURES)), training=True)
    assert fast_calls == [model.layers[0].name] and not notes()


# -- the allocator: a start-up step of its own ------------------------------------------


class FakeLibc:
    def __init__(self, glibc: bool = True):
        self.calls = []
        if glibc:
            self.gnu_get_libc_version = lambda: b"2.36"

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def test_accelerate_leaves_the_allocator_alone(monkeypatch):
    import keras

    from seqapp import fastrnn

    libc = FakeLibc()
    monkeypatch.setattr(fastrnn, "_heap_kept", None)
    monkeypatch.setattr(fastrnn.ctypes, "CDLL", lambda name: libc)
    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(UNITS)])
    assert len(fastrnn.accelerate(model)) == 1
    fastrnn.restore(model)
    assert libc.calls == [] and fastrnn._heap_kept is None


def test_keep_freed_memory_sets_glibc_once_and_says_whether_it_did(monkeypatch):
    from seqapp import fastrnn

    for libc, applied, calls in ((FakeLibc(), True, [(fastrnn.M_MMAP_MAX, 0), (fastrnn.M_TRIM_THRESHOLD, 1 << 30)]),
                                 (FakeLibc(glibc=False), False, [])):
        monkeypatch.setattr(fastrnn, "_heap_kept", None)
        monkeypatch.setattr(fastrnn.ctypes, "CDLL", lambda name, libc=libc: libc)
        assert fastrnn.keep_freed_memory() is applied and fastrnn.keep_freed_memory() is applied
        assert libc.calls == calls  # once per process


def test_keep_freed_memory_is_a_train_setting_on_by_default():
    import dataclasses

    from seqapp.config import TrainConfig

    field = {f.name: f for f in dataclasses.fields(TrainConfig)}["keep_freed_memory"]
    assert field.default is True


# -- nothing of it in a saved model ------------------------------------------------------


def tiny_text_model():
    """Token ids, padding masked (as the word-level tasks) -> Bidirectional GRU -> LSTM -> Dense."""
    import keras

    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(12, 8, mask_zero=True),
                              keras.layers.Bidirectional(keras.layers.GRU(UNITS, return_sequences=True)),
                              keras.layers.LSTM(UNITS, return_sequences=True), keras.layers.Dense(12)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)  # the XLA-compiled loop has its own tests above
    return model


CHILD = r'''
import json, sys
import numpy as np
import keras

model = keras.saving.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({"predictions": model.predict(x, verbose=0).tolist(),
                  "layers": [type(layer).__module__ + "." + type(layer).__name__ for layer in model.layers],
                  "seqapp_loaded": any(m.split(".")[0] == "seqapp" for m in sys.modules)}))
'''


@pytest.mark.process  # a fresh Python process loads the model
def test_a_model_trained_fast_saves_stock_layers_that_load_without_seqapp(tmp_path, fast_calls):
    from seqapp import fastrnn

    model = tiny_text_model()
    accelerated = fastrnn.accelerate(model)
    assert len(accelerated) == 3
    rng = np.random.default_rng(7)
    x, y = rng.integers(1, 12, (16, STEPS)), rng.integers(0, 12, (16, STEPS))
    x[np.arange(STEPS)[None, :] >= rng.integers(1, STEPS + 1, (16, 1))] = 0  # rows of 1 to STEPS tokens, then padding
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert sorted(set(fast_calls)) == sorted(layer.name for layer in accelerated)
    model.save(tmp_path / "x.keras")
    np.save(tmp_path / "x.npy", x)
    done = without_seqapp(CHILD, str(tmp_path / "x.keras"), str(tmp_path / "x.npy"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert not child["seqapp_loaded"]
    assert all(name.startswith("keras.") for name in child["layers"]), child["layers"]
    np.testing.assert_allclose(np.array(child["predictions"]), model.predict(x, verbose=0), rtol=0, atol=1e-6)


@pytest.mark.parametrize("task", ["sentiment", "tagging", "translate"])
def test_the_word_level_tasks_train_every_recurrent_layer_fast(task, notes):
    """Their embeddings mask the padding (a mask of shape (batch, time), which the fast loop takes
    at call time: see the tests above); every recurrent layer of the model, the encoder and decoder
    of translate too, is given the fast loop, with no note. (The tiny runs train them so.)"""
    from conftest import tiny_config

    from seqapp import fastrnn
    from seqapp.training import prepare

    layers = fastrnn.recurrent_layers(prepare(tiny_config(task)).model)
    assert layers and all(hasattr(layer, "_seqapp_stock_inner_loop") for layer in layers)
    assert not notes()


def test_prepare_accelerates_unless_the_setting_is_off(monkeypatch, corpus: Path):
    from seqapp import fastrnn
    from seqapp.tasks import load_config
    from seqapp.training import prepare

    small = ["model.units=8", "model.embedding_dim=4", "data.seq_len=10", "train.batch_size=4"]
    for setting, expected in (("true", 1), ("false", 0)):
        cfg = load_config("textgen", [*small, f"train.fast_rnn={setting}"], {"data.path": str(corpus)})
        model = prepare(cfg).model
        assert sum(hasattr(layer, "_seqapp_stock_inner_loop") for layer in fastrnn.recurrent_layers(model)) == expected
