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

    def devices(self) -> list[str]:
        """The devices this process trains on, so a run says whether it had a GPU (a
        TensorFlow without CUDA quietly trains on the CPU)."""
        import tensorflow as tf

        try:
            return [str(device) for device in self.strategy.extended.worker_devices]
        except RuntimeError:  # the default strategy: ops go to the first GPU, else the CPU
            gpus = tf.config.list_logical_devices("GPU")
            return [(gpus or tf.config.list_logical_devices("CPU"))[0].name]

    def info(self, batch_size: int) -> dict:
        """What the run records about how it was trained (``distribute.json``); ``devices``
        are the chief's."""
        return {"strategy": self.mode, "workers": self.workers, "replicas": self.replicas,
                "batch_size_per_replica": batch_size, "global_batch_size": batch_size * self.replicas,
                "devices": self.devices()}


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


def check_agreement(plan: Plan, epoch: int) -> None:
    """Refuse to train when the workers start from different epochs (a worker died while
    the others were saving an epoch's state): their weights would differ for ever."""
    import tensorflow as tf

    value = tf.constant([float(epoch), float(epoch) ** 2])

    @tf.function
    def total() -> Any:  # the sums of e and e squared are R e and R e^2 only if every e is the same
        per_replica = plan.strategy.run(lambda: tf.identity(value))
        return plan.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    with plan.strategy.scope():
        sums = total()
    if not bool(tf.reduce_all(tf.abs(sums - plan.replicas * value) < 0.5)):
        raise SeqappError(f"the workers' saved states are of different epochs (this one: {epoch}); they cannot go "
                          "on together: start the training again", resumable=False)


def fit_custom(model: Any, train_ds: Any, val_ds: Any, plan: Plan, callbacks: list, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """``model.fit`` for strategies where it fails: seqapp's distributed step, Keras's callbacks.

    ``train_ds`` is batched by the global batch; TensorFlow's auto-sharding (by data)
    gives each replica its slice of every global batch, so the steps are those of a
    single process with the global batch. Progress is one line per epoch, on the chief.
    """
    import keras
    import tensorflow as tf

    hooks = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs, steps=int(train_ds.cardinality()),
                                         verbose=0)
    clipnorm = model.optimizer.clipnorm
    with plan.strategy.scope():
        try:
            train_step, val_step = distributed_steps(model, plan.strategy)
            run_epochs(model, plan, hooks, (train_step, val_step), (train_ds, val_ds), epochs, initial_epoch, log)
        except (tf.errors.UnavailableError, tf.errors.CancelledError, tf.errors.DeadlineExceededError) as exc:
            reason = str(exc.message).strip().splitlines()[0] if exc.message else type(exc).__name__
            raise SeqappError(f"the training stopped because another worker did ({reason[:200]})") from None
        finally:
            model.optimizer.clipnorm = clipnorm


def run_epochs(model: Any, plan: Plan, hooks: Any, step_fns: tuple, datasets: tuple, epochs: int,
               initial_epoch: int, log: Any) -> None:
    """The epochs of :func:`fit_custom`, calling the callbacks where ``model.fit`` would."""
    strategy, (train_step, val_step), (train_ds, val_ds) = plan.strategy, step_fns, datasets
    steps = int(train_ds.cardinality())
    dist_train = strategy.experimental_distribute_dataset(by_data(train_ds))
    dist_val = strategy.experimental_distribute_dataset(by_data(val_ds)) if val_ds is not None else None
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


def by_data(dataset: Any) -> Any:
    """``dataset`` sharded by data: every worker reads the same batches (same split, same
    seeded order) and keeps its replicas' slices of each, so a global batch is that of one
    process (sharding by file does not apply: the data is in memory)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def run_epoch(step: Any, iterator: Any, hooks: Any, steps: int | None) -> float:
    """Run ``step`` over one epoch's iterator; the mean of the batch losses weighted by each
    batch's number of examples, which is how ``model.fit`` logs its epoch loss."""
    total = count = 0.0
    for batch, inputs in enumerate(iterator):
        loss, examples = step(inputs)
        total, count = total + float(loss) * float(examples), count + float(examples)
        if hooks is not None:
            hooks.on_train_batch_end(batch, {"loss": total / count})
        if steps is not None and batch + 1 >= steps:
            break
    return total / max(count, 1.0)


def weighted_losses(loss_object: Any, y: Any, y_pred: Any, sample_weight: Any) -> tuple[Any, Any]:
    """(sum of the weighted per-element losses, the divisor Keras's mean uses) of one batch.

    Keras's default reduction divides the weighted sum by the number of loss elements, or,
    when the prediction carries a Keras mask, by the number of unmasked ones; sample
    weights (sentiment's class weights) multiply the losses and leave the divisor alone.
    Returning both lets a replica divide by the divisor of the whole global batch.
    """
    import tensorflow as tf

    losses = tf.cast(loss_object.call(y, y_pred), tf.float32)
    weights = tf.ones_like(losses)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, tf.float32)
        if sample_weight.shape.rank == losses.shape.rank + 1 and sample_weight.shape[-1] == 1:
            sample_weight = tf.squeeze(sample_weight, -1)
        while sample_weight.shape.rank < losses.shape.rank:
            sample_weight = tf.expand_dims(sample_weight, -1)
        weights *= sample_weight
    mask = getattr(y_pred, "_keras_mask", None)  # where Keras's loss looks for it on TensorFlow
    if mask is None:
        return tf.reduce_sum(losses * weights), tf.cast(tf.size(losses), tf.float32)
    mask = tf.cast(tf.reshape(mask, tf.shape(losses)), tf.float32)
    return tf.reduce_sum(losses * weights * mask), tf.reduce_sum(mask)


def distributed_steps(model: Any, strategy: Any) -> tuple[Any, Any]:
    """A training step and a validation step, each over one distributed global batch.

    Each replica computes the sum of its weighted losses, the divisor (see
    :func:`weighted_losses`) and the sum's gradients, XLA-compiled when ``model.jit_compile``
    (collectives stay outside the compiled part); dividing by the global batch's divisor
    makes the gradients Keras's optimizer sums across replicas those of the global batch's
    mean loss. Returns (that loss, examples in the batch).
    """
    import keras
    import tensorflow as tf

    loss_object = model.loss
    if not isinstance(loss_object, keras.losses.Loss) or loss_object.reduction != "sum_over_batch_size":
        raise SeqappError("train.distribute=multi_worker needs a task compiled with one Keras loss object "
                          "of the default reduction; use train.distribute=none for this task")
    if isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer):  # its scaling is not in the step below
        raise SeqappError("train.mixed_precision=mixed_float16 does not work with train.distribute=multi_worker "
                          "yet; use mixed_bfloat16 or none")
    total_sum = tf.distribute.ReduceOp.SUM
    clipnorm, model.optimizer.clipnorm = model.optimizer.clipnorm, None  # see replica_train; put back by fit_custom
    local_train, local_val = local_steps(model, loss_object, bool(model.jit_compile))

    def replica_train(inputs: Any) -> tuple[Any, Any]:
        context = tf.distribute.get_replica_context()
        loss_sum, divisor, examples, grads = local_train(inputs)
        divisor = context.all_reduce(total_sum, divisor)
        grads = [scaled(grad, 1.0 / tf.maximum(divisor, 1e-12)) for grad in grads]
        if clipnorm:  # clip the whole batch's gradient, as one process would; Keras would clip each share
            dense = [tf.convert_to_tensor(grad) for grad in grads]  # an embedding's gradient is sparse
            grads = [tf.clip_by_norm(grad, clipnorm) / context.num_replicas_in_sync
                     for grad in context.all_reduce(total_sum, dense)]
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.math.divide_no_nan(loss_sum, divisor), examples

    def replica_val(inputs: Any) -> tuple[Any, Any]:
        loss_sum, divisor, examples = local_val(inputs)
        divisor = tf.distribute.get_replica_context().all_reduce(total_sum, divisor)
        return tf.math.divide_no_nan(loss_sum, divisor), examples

    @tf.function
    def train_step(inputs: Any) -> tuple[Any, Any]:
        loss, examples = strategy.run(replica_train, args=(inputs,))
        return strategy.reduce(total_sum, loss, axis=None), strategy.reduce(total_sum, examples, axis=None)

    @tf.function
    def val_step(inputs: Any) -> tuple[Any, Any]:
        loss, examples = strategy.run(replica_val, args=(inputs,))
        return strategy.reduce(total_sum, loss, axis=None), strategy.reduce(total_sum, examples, axis=None)

    return train_step, val_step


def local_steps(model: Any, loss_object: Any, jit_compile: bool) -> tuple[Any, Any]:
    """One replica's share of a step, with no collective operation in it, so XLA can compile
    it: (loss sum, divisor, examples, gradients of the sum) and (loss sum, divisor, examples)."""
    import keras
    import tensorflow as tf

    def losses(inputs: Any, training: bool) -> tuple[Any, Any, Any]:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(inputs)
        loss_sum, divisor = weighted_losses(loss_object, y, model(x, training=training), sample_weight)
        return loss_sum, divisor, tf.cast(tf.shape(tf.nest.flatten(x)[0])[0], tf.float32)

    def train(inputs: Any) -> tuple[Any, Any, Any, list]:
        with tf.GradientTape() as tape:
            loss_sum, divisor, examples = losses(inputs, True)
        return loss_sum, divisor, examples, tape.gradient(loss_sum, model.trainable_variables)

    def val(inputs: Any) -> tuple[Any, Any, Any]:
        return losses(inputs, False)

    if not jit_compile:
        return train, val
    return tf.function(train, jit_compile=True), tf.function(val, jit_compile=True)


def scaled(grad: Any, factor: Any) -> Any:
    """``grad`` times ``factor``, a sparse (embedding) gradient kept sparse."""
    import tensorflow as tf

    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values * factor, grad.indices, grad.dense_shape)
    return grad * factor
