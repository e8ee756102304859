"""seqapp.training.feed_from_python: fit hands each batch to the compiled step from Python,
with the same result as Keras's own training function."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import CORPUS


def tiny_model(jit: bool, text: str | None = None):
    """The tiny textgen run's model and training data, seeded, with the stock recurrent loop
    (on ``text`` where given, else on the bundled corpus)."""
    from seqapp.tasks import REGISTRY, load_config
    from seqapp.training import prepare

    cfg = load_config("textgen", [*REGISTRY["textgen"].tiny["set"], "train.fast_rnn=false",
                                  f"train.jit_compile={str(jit).lower()}"],
                      {"train.epochs": 1, **({"data.text": text} if text else {})})
    ready = prepare(cfg)
    return ready.model, ready.train_ds


def fit_counting(model, dataset) -> int:
    """One epoch of ``model.fit`` over the finite ``dataset``; how many batches it trained on."""
    import keras

    seen = []
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch))
    model.fit(dataset, epochs=1, callbacks=[counter], verbose=0, shuffle=False)
    return len(seen)


def test_fed_fit_trains_every_batch_to_the_weights_keras_fit_gives():
    from seqapp.training import set_jit_compile

    fed, dataset = tiny_model(jit=True, text=CORPUS)  # 14 batches (the bundled corpus: 136)
    set_jit_compile(fed, True)
    assert fed.train_function is not None  # replaced before fit; Keras would build its own
    fed_batches = fit_counting(fed, dataset)

    stock, dataset = tiny_model(jit=True, text=CORPUS)
    stock.jit_compile = True  # Keras's training function: the batch is read inside its graph
    stock_batches = fit_counting(stock, dataset)

    assert fed_batches == stock_batches == int(dataset.cardinality())
    for a, b in zip(fed.get_weights(), stock.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert fed_batches > 5  # several batches: each one's update carries into the next
    assert not np.allclose(fed.get_weights()[0], tiny_model(jit=True, text=CORPUS)[0].get_weights()[0])  # it did train


@pytest.mark.parametrize("jit, mode", [(False, None), (True, "mirrored"), (True, "multi_worker")])
def test_keras_keeps_its_training_function_without_xla_or_under_a_strategy(jit, mode):
    from seqapp.training import set_jit_compile

    model, _ = tiny_model(jit=jit)
    set_jit_compile(model, jit, SimpleNamespace(mode=mode) if mode else None)
    assert model.train_function is None


def test_an_embedding_row_looked_up_many_times_takes_one_adam_step():
    """Keras's Adam moves a row looked up n times by about sqrt(n) x lr; seqapp's optimizer
    sums the repeats first, so every row moves by the learning rate in Adam's first step."""
    import keras
    import tensorflow as tf

    from seqapp.config import TrainConfig
    from seqapp.pipeline import optimizer

    def first_step(adam):
        keras.utils.set_random_seed(0)
        embedding = keras.layers.Embedding(5, 3)
        embedding.build((None,))
        before = embedding.embeddings.numpy().copy()
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(embedding(tf.constant([0] * 8 + [1, 2])) * tf.constant([[1.0, 2.0, 3.0]]))
        adam.apply(tape.gradient(loss, embedding.trainable_variables), embedding.trainable_variables)
        return np.abs(embedding.embeddings.numpy() - before)

    lr = 0.01
    moved = first_step(optimizer(TrainConfig(learning_rate=lr, clipnorm=0)))
    np.testing.assert_allclose(moved[:3], lr, rtol=1e-3)  # rows 0 (8 lookups), 1 and 2 (one each)
    assert np.all(moved[3:] == 0)
    assert first_step(keras.optimizers.Adam(learning_rate=lr))[0].max() > 2 * lr  # what it corrects


# -- one place compiles: the optimizer knows the real number of batches ---------------------------
def counted_batches(dataset) -> int:
    """Batches in one epoch of ``dataset``, by running through it (not its declared cardinality)."""
    return sum(1 for _ in dataset)


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
@pytest.mark.parametrize("name", ["sentiment", "sine", "tagging", "textgen", "translate"])
def test_the_learning_rate_schedule_spans_every_batch_of_every_epoch(name, schedule):
    """With ``cosine`` the rate at the last step (epochs x batches) is 2% of the first, for every
    task; with ``constant`` it never moves. (0.1.0 gave textgen, sentiment and translate a
    schedule of ``epochs`` steps: it bottomed out in the first epoch.)"""
    from seqapp.tasks import REGISTRY, load_config
    from seqapp.training import prepare

    assert set(REGISTRY) == {"sentiment", "sine", "tagging", "textgen", "translate"}  # a new task: add it above
    epochs, rate = 3, 0.004
    cfg = load_config(name, [*REGISTRY[name].tiny["set"], f"train.lr_schedule={schedule}"],
                      {"train.epochs": epochs, "train.learning_rate": rate})
    ready = prepare(cfg)
    optimizer = ready.model.optimizer
    steps = epochs * counted_batches(ready.train_ds)
    assert steps > epochs  # several batches an epoch, or the test could not tell steps from epochs

    def rate_at(step: int) -> float:
        optimizer.iterations.assign(step)
        return float(optimizer.learning_rate)

    assert rate_at(0) == pytest.approx(rate, rel=1e-6)
    expected_end = rate * (0.02 if schedule == "cosine" else 1.0)
    assert rate_at(steps) == pytest.approx(expected_end, rel=1e-3)
    middle = steps // 2
    cosine = 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * middle / steps))
    assert rate_at(middle) == pytest.approx(rate * (cosine if schedule == "cosine" else 1.0), rel=1e-3)


def test_an_extra_callback_that_stops_training_keeps_the_best_epochs_weights(tmp_path):
    """``fit(callbacks=...)`` (e.g. a benchmark's time budget): stopping at a batch end ends the
    training there, the partial epoch is validated, and the best validation epoch's weights stay."""
    import keras

    from seqapp.tasks import REGISTRY, load_config
    from seqapp.training import fit

    model, dataset = tiny_model(jit=False, text=CORPUS)  # 14 batches an epoch
    cfg = load_config("textgen", REGISTRY["textgen"].tiny["set"], {"train.epochs": 5, "train.patience": 3})
    at_epoch_end = []

    class StopInThirdEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(self.model.get_weights())

        def on_train_batch_end(self, batch, logs=None):
            if len(at_epoch_end) == 2 and batch == 2:
                self.model.stop_training = True

    history = fit(model, dataset, dataset, cfg.train, tmp_path, verbose=0, callbacks=[StopInThirdEpoch()])
    assert len(history["loss"]) == len(history["val_loss"]) == len(at_epoch_end) == 3
    best = int(np.argmin(history["val_loss"]))
    for kept, expected in zip(model.get_weights(), at_epoch_end[best], strict=True):
        np.testing.assert_array_equal(kept, expected)
