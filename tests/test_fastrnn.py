"""seqapp.fastrnn: the fast training loop gives the stock layers' outputs and gradients, and
leaves nothing of itself in a saved model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import without_seqapp

TOL = 1e-5
BATCH, STEPS, FEATURES, UNITS = 3, 6, 4, 5


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


def make_layer(kind: str, seed: int, **options):
    """A built stock layer of ``kind`` with random (not initial) weights, biases included."""
    import keras

    keras.utils.set_random_seed(seed)
    layer = getattr(keras.layers, kind)(UNITS, **options)
    layer.build((BATCH, STEPS, FEATURES))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def outputs_and_gradients(layer, x, states, jit: bool = False):
    """The layer's outputs (training=True) and the gradients of a weighted sum of them with
    respect to the input, the initial states and every weight."""
    import tensorflow as tf

    def run(x, states):
        with tf.GradientTape() as tape:
            tape.watch([x, *states])
            out = layer(x, initial_state=list(states) or None, training=True)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            loss = sum(tf.reduce_sum(o * tf.reshape(tf.sin(1.7 * tf.range(tf.size(o), dtype=o.dtype)), tf.shape(o)))
                       for o in outs)
        return outs, tape.gradient(loss, [x, *states, *layer.trainable_variables])

    if jit:
        run = tf.function(run, jit_compile=True)
    return run(x, tuple(states))


def assert_close(got, want):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a is not None and b is not None
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=TOL)


def compare(layer, x, states, fast_calls, jit=False):
    """Stock, then accelerated: the same outputs and gradients, and the fast loop did run."""
    import keras

    from seqapp import fastrnn

    want_out, want_grads = outputs_and_gradients(layer, x, states, jit)
    holder = keras.Sequential([layer])  # accelerate walks a model
    assert fastrnn.accelerate(holder) >= 1
    try:
        got_out, got_grads = outputs_and_gradients(layer, x, states, jit)
    finally:
        fastrnn.restore(holder)
    assert fast_calls, "the fast loop was not taken"
    assert_close(got_out, want_out)
    assert_close(got_grads, want_grads)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_outputs_and_gradients_match_the_stock_layer(kind, return_sequences, go_backwards, seed, fast_calls):
    import tensorflow as tf

    layer = make_layer(kind, seed, return_sequences=return_sequences, go_backwards=go_backwards,
                       return_state=True)
    rng = np.random.default_rng(100 + seed)
    x = tf.constant(rng.normal(0, 1, (BATCH, STEPS, FEATURES)), tf.float32)
    states = [tf.constant(rng.normal(0, 0.5, (BATCH, UNITS)), tf.float32) for _ in range(2 if kind == "LSTM" else 1)]
    compare(layer, x, states, fast_calls)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_xla_compiled_outputs_and_gradients_match(kind, fast_calls):
    import tensorflow as tf

    layer = make_layer(kind, 3, return_sequences=True)
    x = tf.constant(np.random.default_rng(3).normal(0, 1, (BATCH, STEPS, FEATURES)), tf.float32)
    compare(layer, x, [], fast_calls, jit=True)


def test_bidirectional_layers_both_take_the_fast_loop(fast_calls):
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    keras.utils.set_random_seed(4)
    inputs = keras.Input((STEPS, FEATURES))
    model = keras.Model(inputs, keras.layers.Bidirectional(keras.layers.GRU(UNITS, return_sequences=True))(inputs))
    x = tf.constant(np.random.default_rng(4).normal(0, 1, (BATCH, STEPS, FEATURES)), tf.float32)

    def run():
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            loss = tf.reduce_sum(out * tf.reshape(tf.cos(tf.range(tf.size(out), dtype=tf.float32)), tf.shape(out)))
        return [out, *tape.gradient(loss, model.trainable_variables)]

    want = run()
    assert fastrnn.accelerate(model) == 2
    got = run()
    assert len(fast_calls) == 2
    assert_close(got, want)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
@pytest.mark.parametrize("vocabulary, go_backwards", [(7, False), (7, True), (40, False)])
def test_after_an_embedding_the_projected_table_gives_the_same_gradients(kind, vocabulary, go_backwards,
                                                                          monkeypatch, fast_calls):
    """Embedding -> recurrent layer in a traced step: a table with at most half as many rows as
    the batch has tokens (7 < 18 / 2) is projected instead of the rows; a larger one (40) is not."""
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
            loss = tf.reduce_sum(out * tf.reshape(tf.sin(tf.range(tf.size(out), dtype=tf.float32)), tf.shape(out)))
        return [out, *(tf.convert_to_tensor(g) for g in tape.gradient(loss, model.trainable_variables))]

    want = run(ids)
    assert fastrnn.accelerate(model) == 1
    got = tf.function(run.python_function)(ids)
    assert len(fast_calls) == 1 and len(looked_up) == 1
    assert (looked_up[0] is not None) == (vocabulary * 2 <= BATCH * STEPS)
    assert_close(got, want)


@pytest.mark.parametrize("options", [{"recurrent_dropout": 0.2}, {"activation": "relu"}, {"use_bias": False},
                                     {"reset_after": False}])
def test_layers_the_fast_loop_does_not_cover_keep_their_own(options):
    import keras

    from seqapp import fastrnn

    model = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.GRU(UNITS, **options)])
    assert fastrnn.accelerate(model) == 0
    assert "inner_loop" not in vars(model.layers[0])


def test_masks_inference_and_cell_dropout_take_the_stock_loop(fast_calls):
    import keras
    import tensorflow as tf

    from seqapp import fastrnn

    keras.utils.set_random_seed(5)
    tokens = keras.Input((STEPS,), dtype="int32")
    x = keras.layers.Embedding(10, FEATURES, mask_zero=True)(tokens)
    model = keras.Model(tokens, keras.layers.LSTM(UNITS)(x))
    padded = tf.constant([[3, 4, 5, 0, 0, 0], [1, 2, 3, 4, 5, 6], [7, 0, 0, 0, 0, 0]])
    want = model(padded, training=True)
    assert fastrnn.accelerate(model) == 1
    assert_close([model(padded, training=True), model(padded)], [want, want])
    assert not fast_calls  # a mask: the stock loop (it skips the padding)
    dropping = keras.Sequential([keras.Input((STEPS, FEATURES)), keras.layers.LSTM(UNITS, dropout=0.5)])
    fastrnn.accelerate(dropping)
    dropping(tf.ones((BATCH, STEPS, FEATURES)), training=True)
    assert not fast_calls


def tiny_language_model():
    import keras

    keras.utils.set_random_seed(6)
    model = keras.Sequential([keras.Input((STEPS,), dtype="int32"), keras.layers.Embedding(12, 8),
                              keras.layers.GRU(UNITS, return_sequences=True),
                              keras.layers.LSTM(UNITS, return_sequences=True), keras.layers.Dense(12)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=False)  # the XLA-compiled loop has its own test above
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


def test_a_model_trained_fast_saves_stock_layers_that_load_without_seqapp(tmp_path, fast_calls):
    from seqapp import fastrnn

    model = tiny_language_model()
    assert fastrnn.accelerate(model) == 2
    rng = np.random.default_rng(7)
    x, y = rng.integers(0, 12, (16, STEPS)), rng.integers(0, 12, (16, STEPS))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert fast_calls
    model.save(tmp_path / "x.keras")
    np.save(tmp_path / "x.npy", x)
    done = without_seqapp(CHILD, str(tmp_path / "x.keras"), str(tmp_path / "x.npy"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    child = json.loads(done.stdout.strip().splitlines()[-1])
    assert not child["seqapp_loaded"]
    assert all(name.startswith("keras.") for name in child["layers"]), child["layers"]
    np.testing.assert_allclose(np.array(child["predictions"]), model.predict(x, verbose=0), rtol=0, atol=1e-6)


def test_prepare_accelerates_unless_the_setting_is_off(monkeypatch, corpus: Path):
    from seqapp import fastrnn
    from seqapp.tasks import load_config
    from seqapp.training import prepare

    small = ["model.units=8", "model.embedding_dim=4", "data.seq_len=10", "train.batch_size=4"]
    for setting, expected in (("true", 1), ("false", 0)):
        cfg = load_config("textgen", [*small, f"train.fast_rnn={setting}"], {"data.path": str(corpus)})
        model = prepare(cfg).model
        assert sum(hasattr(layer, "_seqapp_stock_inner_loop") for layer in fastrnn.recurrent_layers(model)) == expected
