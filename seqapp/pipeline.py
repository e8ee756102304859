"""The pieces of training that tasks use too: seeds, data order, tf.data pipelines, the optimizer.

A task builds its datasets with :func:`make_dataset` or :func:`shuffled`; the training flow
(:mod:`seqapp.training`) seeds with :func:`set_seed`, moves :func:`data_epoch` at each epoch
and builds the :func:`optimizer`. Kept apart from the flow so that tasks, which sit below it,
never import it.
"""

from __future__ import annotations

from typing import Any

from seqapp.config import TrainConfig


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a run can be repeated."""
    import keras

    keras.utils.set_random_seed(seed)


_data_epoch: Any = None


def data_epoch() -> Any:
    """The epoch the training is in, as a TensorFlow variable that shuffled datasets read.

    The training loop sets it when an epoch begins; a dataset made by :func:`shuffled`
    reads it each time an epoch's iterator is created.
    """
    global _data_epoch
    if _data_epoch is None:
        import tensorflow as tf

        _data_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    return _data_epoch


def shuffled(tensors: Any, size: int, seed: int, batch_size: int | None = None) -> Any:
    """The ``size`` slices of ``tensors`` in an order set by ``seed`` and the epoch, batched if asked.

    Unlike ``Dataset.shuffle``, whose order follows how many epochs one iterator object
    has run, the order here depends only on the seed and :func:`data_epoch`: epoch 5 of
    a resumed training sees the batches it would have seen without the interruption.
    With ``batch_size`` whole batches are gathered at once (several times faster).
    """
    import tensorflow as tf

    epoch = data_epoch()

    def epoch_order(_: Any) -> Any:
        keys = tf.random.stateless_uniform([size], seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        return tf.data.Dataset.from_tensor_slices(tf.argsort(keys))

    def pick(index: Any) -> Any:
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, index), tensors)

    order = tf.data.Dataset.range(1).flat_map(epoch_order)
    order = order.apply(tf.data.experimental.assert_cardinality(size))  # Keras knows an epoch's length
    if batch_size:
        order = order.batch(batch_size)
    return order.map(pick, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(inputs: Any, targets: Any, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """A batched, prefetched ``tf.data`` pipeline over in-memory arrays."""
    import tensorflow as tf

    if shuffle:
        size = len(targets) if not isinstance(targets, (tuple, dict)) else len(next(iter(targets)))
        tensors = tf.nest.map_structure(tf.convert_to_tensor, (inputs, targets))
        return shuffled(tensors, size, seed, batch_size).prefetch(tf.data.AUTOTUNE)
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def optimizer(cfg: TrainConfig, steps_per_epoch: int = 1) -> Any:
    """Adam with gradient clipping by norm (``clipnorm: 0`` turns clipping off).

    With ``lr_schedule: cosine`` the learning rate falls from ``learning_rate`` to 2% of it
    over all epochs (``steps_per_epoch`` batches each): a regression loss only settles
    near its floor once the step size shrinks.
    """
    import keras

    learning_rate = cfg.learning_rate
    if cfg.lr_schedule == "cosine":
        total_steps = max(cfg.epochs * steps_per_epoch, 1)
        learning_rate = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, total_steps, alpha=0.02)
    return dense_sparse_gradients(keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=cfg.clipnorm or None))


def dense_sparse_gradients(optimizer: Any) -> Any:
    """``optimizer``, made to sum every sparse gradient into a dense one before applying it.

    An Embedding's gradient is a ``tf.IndexedSlices`` with one row per token of the batch,
    repeats included. Keras 3's Adam on TensorFlow applies those rows without summing the
    repeats: a row looked up n times in a batch moves about sqrt(n) times the learning
    rate in one step (8 lookups at lr 0.01: 0.028 instead of 0.010), so the most frequent
    characters and words take the largest steps, and ``clipnorm`` measures the unsummed
    rows. Summed, every row takes Adam's own step. The optimizer stays a stock Adam (a plain
    attribute of this instance; nothing of it is saved).
    """
    import tensorflow as tf

    stock = optimizer.apply

    def apply(grads: Any, trainable_variables: Any = None) -> Any:
        grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads]
        return stock(grads, trainable_variables)

    object.__setattr__(optimizer, "apply", apply)  # Keras tracks nothing set this way
    return optimizer
