"""Training on several replicas: which ``tf.distribute`` strategy, and a loop for the one
where ``keras.Model.fit`` fails.

``train.distribute`` picks the strategy (:func:`resolve`): ``mirrored`` (one host, several
GPUs) trains with ``model.fit``; ``multi_worker`` (several processes, each given
``TF_CONFIG``) cannot, because ``fit`` under ``MultiWorkerMirroredStrategy`` fails in
Keras 3 (keras-team/keras#20585: "Attempt to convert a value (PerReplica...)"). For it
:func:`fit_custom` runs seqapp's own distributed step and drives the same Keras callbacks
(``on_epoch_begin/end``, ``on_train_batch_end``, the logs dict, ``model.stop_training``),
so early stopping, checkpoints and history stay in :class:`seqapp.checkpoint.Checkpointer`.

``train.batch_size`` is per replica; a step sees ``batch_size x replicas`` examples. The
learning rate is not scaled: the loss is the mean over the global batch, exactly as a
single process with that batch size would compute it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from seqapp.errors import SeqappError

MODES = ("auto", "none", "mirrored", "multi_worker")


def cluster(tf_config: str | None) -> tuple[int, int]:
    """(number of workers, this worker's index) from a ``TF_CONFIG`` value; (1, 0) when unset."""
    if not tf_config:
        return 1, 0
    try:
        parsed = json.loads(tf_config)
        spec, task = parsed.get("cluster", {}), parsed.get("task", {})
        workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
        index = int(task.get("index", 0)) + (len(spec.get("chief", [])) if task.get("type") == "worker" else 0)
    except (ValueError, AttributeError, TypeError) as exc:
        raise SeqappError(f"TF_CONFIG is not valid ({exc}); give JSON like "
                          '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}') \
            from None
    if workers < 1 or not 0 <= index < workers:
        raise SeqappError(f"TF_CONFIG names {workers} worker(s) but this task's index is {index}; fix TF_CONFIG")
    return workers, index


def resolve(mode: str, tf_config: str | None, gpus: int) -> str:
    """The strategy ``auto`` stands for: multi_worker when TF_CONFIG names more than one
    worker, mirrored when more than one GPU is visible, else none; other modes as given."""
    if mode != "auto":
        return mode
    if cluster(tf_config)[0] > 1:
        return "multi_worker"
    return "mirrored" if gpus > 1 else "none"


@dataclass
class Plan:
    """The strategy a training runs under and this process's place in it."""

    mode: str
    strategy: Any
    workers: int = 1
    index: int = 0

    @property
    def chief(self) -> bool:
        """Worker 0 writes the run; the others train alongside and keep nothing."""
        return self.index == 0

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def info(self, batch_size: int) -> dict:
        """What the run records about how it was trained (``distribute.json``)."""
        return {"strategy": self.mode, "workers": self.workers, "replicas": self.replicas,
                "batch_size_per_replica": batch_size, "global_batch_size": batch_size * self.replicas}


_plan: Plan | None = None


def plan(mode: str) -> Plan:
    """The strategy for ``train.distribute`` (created once per process: a multi-worker one
    configures TensorFlow's collective operations, which can be done only once)."""
    global _plan
    import tensorflow as tf

    chosen = resolve(mode, os.environ.get("TF_CONFIG"), len(tf.config.list_physical_devices("GPU")))
    if _plan is not None and _plan.mode == chosen:
        return _plan
    workers, index = cluster(os.environ.get("TF_CONFIG")) if chosen == "multi_worker" else (1, 0)
    if chosen == "multi_worker":
        if workers < 2 and not os.environ.get("TF_CONFIG"):
            raise SeqappError("train.distribute=multi_worker needs TF_CONFIG on each worker; start the workers "
                              "with 'seqapp launch --workers N -- train ...' or set TF_CONFIG")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif chosen == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    _plan = Plan(chosen, strategy, workers, index)
    return _plan


def fit_custom(model: Any, train_ds: Any, val_ds: Any, plan: Plan, callbacks: list, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """``model.fit`` for strategies where it fails: seqapp's distributed step, Keras's callbacks.

    ``train_ds`` is batched by the global batch; TensorFlow's auto-sharding (by data)
    gives each replica its slice of every global batch, so the steps are those of a
    single process with the global batch. Progress is one line per epoch, on the chief.
    """
    import keras

    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=int(train_ds.cardinality()),
                                         verbose=0)
    clipnorm = model.optimizer.clipnorm
    with plan.strategy.scope():
        try:
            train_step, val_step = distributed_steps(model, plan.strategy)
            run_epochs(model, plan, hooks, (train_step, val_step), (train_ds, val_ds), epochs, initial_epoch, log)
        finally:
            model.optimizer.clipnorm = clipnorm


def run_epochs(model: Any, plan: Plan, hooks: Any, step_fns: tuple, datasets: tuple, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """The epochs of :func:`fit_custom`, calling the callbacks where ``model.fit`` would."""
    strategy, (train_step, val_step), (train_ds, val_ds) = plan.strategy, step_fns, datasets
    steps = int(train_ds.cardinality())
    dist_train = strategy.experimental_distribute_dataset(train_ds)
    dist_val = strategy.experimental_distribute_dataset(val_ds) if val_ds is not None else None
    model.stop_training = False
    hooks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)  # sets the data epoch: the iterator below reads it
        began = time.perf_counter()
        logs = {"loss": run_epoch(train_step, iter(dist_train), hooks, steps)}
        seconds = time.perf_counter() - began
        if dist_val is not None:
            logs["val_loss"] = run_epoch(val_step, iter(dist_val), None, None)
        hooks.on_epoch_end(epoch, logs)
        if plan.chief and log is not None:
            log(f"Epoch {epoch + 1}/{epochs} - {steps} steps - {seconds:.1f}s training - "
                + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        if model.stop_training:
            break
    hooks.on_train_end()


def run_epoch(step: Any, iterator: Any, hooks: Any, steps: int | None) -> float:
    """Run ``step`` over one epoch's iterator; the example-weighted mean loss (as Keras logs it)."""
    total = count = 0.0
    for batch, inputs in enumerate(iterator):
        loss_sum, elements = step(inputs)
        total, count = total + float(loss_sum), count + float(elements)
        if hooks is not None:
            hooks.on_train_batch_end(batch, {"loss": total / count})
        if steps is not None and batch + 1 >= steps:
            break
    return total / max(count, 1.0)


def distributed_steps(model: Any, strategy: Any) -> tuple[Any, Any]:
    """A training step and a validation step, each over one distributed global batch.

    Each replica sums its per-element losses and divides by the global number of
    elements, so the gradients Keras's optimizer sums across replicas are those of the
    global batch's mean loss. Returns (loss sum, element count) over all replicas.
    """
    import keras
    import tensorflow as tf

    loss_object = model.loss
    if not isinstance(loss_object, keras.losses.Loss):
        raise SeqappError("train.distribute=multi_worker needs a task compiled with one Keras loss object; "
                          "use train.distribute=none for this task")
    total_sum = tf.distribute.ReduceOp.SUM
    clipnorm, model.optimizer.clipnorm = model.optimizer.clipnorm, None  # see replica_train; put back by fit_custom

    def per_element(inputs: Any, training: bool) -> tuple[Any, Any]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(inputs)
        losses = tf.cast(loss_object.call(y, model(x, training=training)), tf.float32)
        return tf.reduce_sum(losses), tf.cast(tf.size(losses), tf.float32)

    def replica_train(inputs: Any) -> tuple[Any, Any]:
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            loss_sum, elements = per_element(inputs, True)
            loss = loss_sum / context.all_reduce(total_sum, elements)
        grads = tape.gradient(loss, model.trainable_variables)
        if clipnorm:  # clip the whole batch's gradient, as one process would; Keras would clip each share
            dense = [tf.convert_to_tensor(grad) for grad in grads]  # an embedding's gradient is sparse
            grads = [tf.clip_by_norm(grad, clipnorm) / context.num_replicas_in_sync
                     for grad in context.all_reduce(total_sum, dense)]
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss_sum, elements

    @tf.function
    def train_step(inputs: Any) -> tuple[Any, Any]:
        loss_sum, elements = strategy.run(replica_train, args=(inputs,))
        return strategy.reduce(total_sum, loss_sum, axis=None), strategy.reduce(total_sum, elements, axis=None)

    @tf.function
    def val_step(inputs: Any) -> tuple[Any, Any]:
        loss_sum, elements = strategy.run(per_element, args=(inputs, False))
        return strategy.reduce(total_sum, loss_sum, axis=None), strategy.reduce(total_sum, elements, axis=None)

    return train_step, val_step
