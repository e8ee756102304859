"""Training: the fit loop and the whole train-and-save flow, the one place that compiles a model.

``train(cfg)`` is the flow of one run, in a draft folder (:mod:`seqapp.drafts`)::

    task.load_data -> task.fit_preprocessing -> task.build_model -> task.datasets
        -> compile (task.objective + the optimizer) -> fit (tf.data, training state)
        -> model.keras, preprocessing.json, config.yaml, history.csv, plots, metrics.json -> publish

Tasks say what their model is and what it optimises; only this module knows how many
batches an epoch has, the distribution strategy and the precision, so only it compiles.

``resume(draft)`` takes an interrupted one up from its saved state (:mod:`seqapp.checkpoint`).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqapp import drafts, faults, files, finetune, provenance
from seqapp.config import Config, TrainConfig
from seqapp.errors import SeqappError
from seqapp.pipeline import data_epoch, optimizer, set_seed
from seqapp.plots import plot_history
from seqapp.runs import Run
from seqapp.tasks import get_task, load_saved_config
from seqapp.tasks.base import Splits, Task


def fit(model: Any, train_ds: Any, val_ds: Any, cfg: TrainConfig, folder: Path, verbose: int | None = None,
        state: Any = None, guard: Any = None, plan: Any = None, callbacks: Sequence[Any] = ()) -> dict:
    """``model.fit`` with early stopping, best weights, history.csv and a resumable training state.

    ``state`` (from :func:`seqapp.checkpoint.load`) continues an interrupted training: an
    epoch stopped half-way first finishes on the batches it had left. ``guard`` (a
    :class:`~seqapp.checkpoint.SignalGuard`) turns Ctrl-C and SIGTERM into a saved state.
    Returns the Keras history dict of the whole training. With no validation data, early
    stopping follows the training loss. Under a ``plan`` (:mod:`seqapp.distribute`) whose
    strategy ``model.fit`` cannot run, seqapp's own step drives the same callbacks.
    ``callbacks`` (e.g. a benchmark's time budget) run after seqapp's own, which keeps
    the best weights: one that sets ``model.stop_training`` ends the training as early
    stopping does, the best validation epoch's weights restored.
    """
    from seqapp import checkpoint

    state = state or checkpoint.State()
    guard = guard or checkpoint.SignalGuard()
    monitor = "val_loss" if val_ds is not None else "loss"
    keeper = checkpoint.Checkpointer(folder, cfg, monitor, state, guard, data_epoch())
    keeper.epochs_only = guard.epochs_only = plan is not None and plan.mode == "multi_worker"
    callbacks = [keeper, *callbacks]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    set_jit_compile(model, cfg.jit_compile, plan)
    guard.deferring = True
    try:
        if state.step and not state.done:  # the interrupted epoch, on the batches it had left
            checkpoint.build_metrics(model, train_ds)
            keeper.pause_after_epoch = True
            fit_loop(model, train_ds.skip(state.step), val_ds, cfg.epochs, state.epoch, callbacks, verbose, plan)
            keeper.pause_after_epoch = False
        if not state.done:
            fit_loop(model, train_ds, val_ds, cfg.epochs, state.epoch, callbacks, verbose, plan)
    finally:
        guard.deferring = False
    if keeper.restore_pending:  # finished before the interruption: only the saving was left
        checkpoint.restore(model, state.arrays, ("model",))
    if cfg.patience > 0 and state.arrays.get("best"):
        model.set_weights(state.arrays["best"])
    return state.history


def set_jit_compile(model: Any, jit_compile: bool | None, plan: Any = None) -> None:
    """``train.jit_compile`` on ``model`` (None: Keras's choice) and, under the default
    strategy (``plan`` None or ``distribute: none``), :func:`feed_from_python`."""
    if jit_compile is not None:
        model.jit_compile = jit_compile  # Keras warns and stays off where a layer cannot be compiled
    if plan is None or plan.mode == "none":
        feed_from_python(model)


def feed_from_python(model: Any) -> None:
    """Have ``model.fit`` hand each batch to its XLA-compiled training step from Python.

    Keras's own training function takes the batch from the iterator inside a graph function
    that then launches the compiled step; on CPU that launch made an LSTM-256 or GRU-256
    textgen step 25-35% slower than calling the same compiled step directly (230 vs 173 ms
    and 214 vs 141 ms per batch of 64 x 100 on 2 cores). Here the batch is read eagerly and
    the step called directly, as ``train_on_batch`` does. Only with ``jit_compile`` on (without
    XLA the two measure the same) and only under the default strategy (``distribute: none``).
    """
    if not model.jit_compile:
        return
    import tensorflow as tf

    step = tf.function(model.train_step, jit_compile=True, reduce_retracing=True)

    def train_function(iterator: Any) -> Any:
        return step(next(iterator))  # StopIteration at the end of a finite epoch, as Keras expects

    model.train_function = train_function


def fit_loop(model: Any, train_ds: Any, val_ds: Any, epochs: int, initial_epoch: int, callbacks: list, verbose: int,
             plan: Any) -> None:
    """``model.fit`` from ``initial_epoch``, or seqapp's distributed loop where fit cannot run."""
    if plan is not None and plan.mode == "multi_worker":
        from seqapp import distribute

        distribute.fit_custom(model, train_ds, val_ds, plan, callbacks, epochs, initial_epoch,
                              print if verbose else None)
        return
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, initial_epoch=initial_epoch,
              callbacks=callbacks, verbose=verbose, shuffle=False)  # tf.data shuffles


@dataclass
class Prepared:
    """Everything a training run needs before ``fit``: the task, its data and its model."""

    task: Task
    splits: Splits
    preprocessing: dict
    model: Any
    train_ds: Any
    val_ds: Any
    plan: Any = None
    data: list = field(default_factory=list)  # the data files read, for provenance.json (provenance.reading)


def prepare(cfg: Config, plan: Any = None, base: Run | None = None) -> Prepared:
    """Seed, read and split the data, fit the preprocessing, build the model and pipelines.

    The first half of :func:`train`; benchmarks and tests that time or inspect training
    call it instead of repeating the steps. Under a ``plan`` (:mod:`seqapp.distribute`)
    the model, optimizer and metrics are made in the strategy's scope and the pipelines
    are batched by the global batch (``train.batch_size`` per replica); every worker
    splits the data the same way, as the split depends on the data and seed only. With a
    ``base`` run (``train --from``, :mod:`seqapp.finetune`), its preprocessing and trained
    weights are the start.
    """
    import dataclasses

    task = get_task(cfg.task)()
    set_seed(cfg.train.random_seed)
    with provenance.reading() as data:
        splits = task.load_data(cfg)
    prep = {"task": cfg.task, **task.fit_preprocessing(cfg, splits)}  # the task: a check against a foreign config
    if base is not None:
        prep = {"task": cfg.task, **finetune.carried_preprocessing(base, prep)}
        prep.pop("calibration", None)  # the base's temperature fits the base: train.calibrate fits a new one
    if plan is None or plan.mode == "none":
        model = accelerated(started_model(task, cfg, prep, base), cfg)
        train_ds, val_ds = task.datasets(cfg, prep, splits)
        compile_model(model, task, cfg, prep, batches_per_epoch(train_ds))
        return Prepared(task, splits, prep, model, train_ds, val_ds, plan, data)
    with plan.strategy.scope():
        model = accelerated(started_model(task, cfg, prep, base), cfg)
    global_batch = cfg.train.batch_size * plan.replicas
    train_ds, val_ds = task.datasets(dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, batch_size=global_batch)), prep, splits)
    with plan.strategy.scope():
        compile_model(model, task, cfg, prep, batches_per_epoch(train_ds))
    return Prepared(task, splits, prep, model, train_ds, val_ds, plan, data)


def started_model(task: Task, cfg: Config, prep: dict, base: Run | None) -> Any:
    """:func:`build_model`, with the trained weights of ``base`` when there is one (``train --from``)."""
    model = build_model(task, cfg, prep)
    if base is not None:
        finetune.start_from(model, base, cfg)
    return model


def compile_model(model: Any, task: Task, cfg: Config, prep: dict, batches: int) -> None:
    """Compile ``model`` with the task's objective and the optimizer for ``batches`` steps an epoch
    (a cosine schedule spans ``train.epochs`` x ``batches`` steps). Under ``mixed_float16``
    Keras wraps the optimizer in a ``LossScaleOptimizer`` (the model holds the policy)."""
    objective = task.objective(cfg, prep)
    model.compile(optimizer=optimizer(cfg.train, batches), loss=objective.loss, metrics=objective.metrics or None,
                  weighted_metrics=objective.weighted_metrics or None, loss_weights=objective.loss_weights)


def batches_per_epoch(dataset: Any) -> int:
    """How many batches one epoch of ``dataset`` has: its cardinality, counted when tf.data cannot
    tell (every seqapp pipeline declares it, so counting is the exception)."""
    count = int(dataset.cardinality())
    if count < 0:
        count = sum(1 for _ in dataset)
    return max(count, 1)


def accelerated(model: Any, cfg: Config) -> Any:
    """``model`` with ``train.fast_rnn``'s training loop on its recurrent layers, if set
    (:mod:`seqapp.fastrnn`; the layers stay stock Keras layers, and so does model.keras); with
    ``train.keep_freed_memory`` too, once a layer takes the fast loop, glibc keeps freed memory
    (process-wide and for good: :func:`seqapp.fastrnn.keep_freed_memory`)."""
    if cfg.train.fast_rnn:
        from seqapp import fastrnn

        if fastrnn.accelerate(model) and cfg.train.keep_freed_memory:
            fastrnn.keep_freed_memory()
    return model


def build_model(task: Task, cfg: Config, prep: dict) -> Any:
    """The task's model under ``train.mixed_precision``'s dtype policy.

    The policy is set only while the layers are made (each layer keeps the policy it was
    made under, and ``model.keras`` records it), so models built later in the same process
    (inference graphs, other runs, tests) are float32 as before.
    """
    import keras

    if cfg.train.mixed_precision == "none":
        return task.build_model(cfg, prep)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.train.mixed_precision)
    try:
        return task.build_model(cfg, prep)
    finally:
        keras.config.set_dtype_policy(previous)


def train(cfg: Config, out: Path, name: str | None = None, verbose: int | None = None,
          log: Callable[[str], None] = print, origin: dict | None = None) -> Run:
    """Train a run for ``cfg`` and save it under ``out``; return the published Run.

    ``origin`` names the run this one repeats (``{"like": RUN}``) or fine-tunes (``{"from": RUN}``,
    whose preprocessing and weights it starts from): recorded in the run's provenance.

    Ctrl-C or SIGTERM saves the training state and raises :class:`seqapp.drafts.Interrupted`
    (its ``draft`` names the folder to resume). Under ``train.distribute`` with several
    workers only worker 0 (the chief) writes the run; the others keep their training state
    in :func:`seqapp.drafts.worker_home` until the training ends, and the Run they return
    names their deleted draft.
    """
    from seqapp import distribute
    from seqapp.checkpoint import SignalGuard

    with SignalGuard() as guard:  # from the start: Ctrl-C and SIGTERM end a wait for the other workers too
        plan = distribute.plan(cfg.train.distribute, cfg.train.peer_wait_s)  # first: before any other TF work
        home = drafts.worker_home(out, plan.index) if plan.index else out
        try:
            return run_draft(drafts.start(home, cfg, name, origin), cfg, guard, verbose, log, plan)
        finally:
            if plan.index:  # a worker's backup folders go when nothing is left in them to resume
                drafts.tidy_home(home / cfg.task)


def resume(path: Path | None, out: Path, verbose: int | None = None, log: Callable[[str], None] = print) -> Run:
    """Continue the interrupted training in draft folder ``path`` (default: the newest under ``out``).

    A multi-worker training resumes on every worker at once: each goes on from its own state
    of the last epoch all of them finished (the chief's draft, the others' backups).
    """
    from seqapp import distribute
    from seqapp.checkpoint import SignalGuard

    with SignalGuard() as guard:
        draft = drafts.open_draft(Path(path) if path else drafts.newest(out))
        try:
            cfg = load_saved_config(draft.path / "config.yaml")
            plan = distribute.plan(cfg.train.distribute, cfg.train.peer_wait_s)
        except BaseException as exc:
            draft.unlock()
            if isinstance(exc, KeyboardInterrupt) and draft.has_state():  # e.g. while waiting for the workers
                exc.draft = draft.path  # type: ignore[attr-defined]  (the CLI says how to resume)
            raise
        return run_draft(draft, cfg, guard, verbose, log, plan)


def run_draft(draft: drafts.Draft, cfg: Config, guard: Any, verbose: int | None, log: Callable[[str], None],
              plan: Any = None) -> Run:
    """Train (or go on training) in ``draft``, then evaluate, save and publish the run
    (a worker other than the chief stops after training: the chief saves the run)."""
    from seqapp import checkpoint, distribute

    chief = plan is None or plan.chief
    with distribute.watchdog.watching(lambda: drafts.after_signal(draft, chief)), drafts.training(draft):
        ready = prepare(cfg, plan, finetune.base_of(drafts.info_problem(draft.path)[0]))
        keep_preprocessing(draft.path, ready.preprocessing)
        state = checkpoint.load(draft.path)
        if state is None:
            log(f"training {cfg.task}: {ready.model.count_params():,} parameters, up to {cfg.train.epochs} epochs")
        else:
            at = f", batch {state.step + 1}" if state.step else ""
            log(f"resuming {cfg.task} in {draft.path} at epoch {min(state.epoch + 1, cfg.train.epochs)}{at}")
        if plan is not None:
            log(f"devices: {', '.join(plan.devices())} ({plan.mode}, {plan.replicas} replica(s))")
        if plan is not None and plan.mode == "multi_worker":
            distribute.check_agreement(plan, state.epoch if state else 0)
        state = state or checkpoint.State()  # fit's, whose history the TensorBoard log reads
        with epoch_logs(ready, cfg, draft.path, state, chief) as logs:
            history = fit(ready.model, ready.train_ds, ready.val_ds, cfg.train, draft.path, verbose, state, guard,
                          plan, logs)
        write_digest(ready.model, history, plan)
        if plan is not None and not plan.chief:
            log(f"worker {plan.index} of {plan.workers}: trained; worker 0 saves the run")
            drafts.remove_backup(draft.path)
            return Run(path=draft.path, config=cfg, preprocessing=ready.preprocessing, _model=ready.model)
        run = finish(ready, cfg, draft.path, history)
        run.path = drafts.publish(draft, ready.data)
    return run


def epoch_logs(ready: Prepared, cfg: Config, folder: Path, state: Any, chief: bool) -> Any:
    """``train.tensorboard``: a context giving the callbacks that write the epochs' TensorBoard logs
    in ``folder`` (:mod:`seqapp.tensorboard_log`), on the chief only; no callbacks otherwise."""
    import contextlib

    if not (cfg.train.tensorboard and chief):
        return contextlib.nullcontext([])
    from seqapp import tensorboard_log

    sample = ready.task.epoch_sample(cfg, ready.preprocessing, ready.splits)
    return tensorboard_log.writing(folder, state.history, sample)


def keep_preprocessing(folder: Path, prep: dict) -> None:
    """Save the fitted preprocessing in a new draft; in a resumed one, check the data is unchanged."""
    path = folder / "preprocessing.json"
    if not path.exists():
        files.write_json(path, prep)
        return
    saved = files.read_json(path)
    if isinstance(saved, dict):
        saved.pop("calibration", None)  # written after training (finish), and again when it finishes now
    if saved != json.loads(json.dumps(files.finite(prep))):
        raise SeqappError(f"the training data changed since this training began ({path} differs); "
                          "start a new training", resumable=False)


def finish(ready: Prepared, cfg: Config, folder: Path, history: dict) -> Run:
    """Save the trained model, then the metrics and plots of the run in ``folder``."""
    if ready.plan is not None:
        files.write_json(folder / "distribute.json", ready.plan.info(cfg.train.batch_size))
        if ready.plan.mode == "multi_worker":  # evaluating under the strategy would wait for the other workers
            plain = build_model(ready.task, cfg, ready.preprocessing)
            compile_model(plain, ready.task, cfg, ready.preprocessing, batches_per_epoch(ready.train_ds))
            plain.set_weights(ready.model.get_weights())
            ready.model = plain
    save_model(ready.model, folder / "model.keras")
    faults.point("final_save")
    run = Run(path=folder, config=cfg, preprocessing=ready.preprocessing, _model=ready.model)
    if cfg.train.calibrate:  # before the LiteRT graphs and the metrics, which both use the temperature
        calibrate(ready, run, folder)
    if cfg.train.litert:  # fast inference graphs (LiteRT), where the task has them
        ready.task.export(float32_twin(ready, run), folder)
    metrics = ready.task.evaluate(run, ready.splits)
    metrics["epochs_trained"] = len(next(iter(history.values()), []))
    files.write_json(folder / "metrics.json", metrics)
    write_plots(ready.task, run, ready.splits, history, folder / "plots")
    return run


def calibrate(ready: Prepared, run: Run, folder: Path) -> None:
    """``train.calibrate``: the task's ``calibration`` entry (a temperature fitted on the validation
    split) into the run's preprocessing.json; a warning when there was nothing to fit it on."""
    found = ready.task.calibrate(run, ready.splits)
    if found is None:
        logging.getLogger("seqapp").warning("no validation examples to calibrate on; the run is not calibrated")
        return
    ready.preprocessing["calibration"] = found
    files.write_json(folder / "preprocessing.json", ready.preprocessing)


def float32_twin(ready: Prepared, run: Run) -> Run:
    """``run`` with its model rebuilt in float32 where it was trained in mixed precision:
    the LiteRT converter cannot lower bfloat16 recurrent loops, and the graphs run on CPUs,
    where float32 is the fast type. The weights are float32 either way."""
    import dataclasses

    if run.config.train.mixed_precision == "none":
        return run
    model = ready.task.build_model(run.config, ready.preprocessing)  # the process's policy: float32
    model.set_weights(ready.model.get_weights())
    return dataclasses.replace(run, _model=model)


def write_digest(model: Any, history: dict, plan: Any) -> None:
    """With ``SEQAPP_WEIGHTS_DIGEST=FOLDER``, write ``FOLDER/worker-<index>.json``: a SHA-256
    of the final weights and the history, so tests can check that workers agree."""
    import hashlib
    import os

    import numpy as np

    folder = os.environ.get("SEQAPP_WEIGHTS_DIGEST")
    if not folder:
        return
    digest = hashlib.sha256()
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
    index = plan.index if plan is not None else 0
    files.write_json(Path(folder) / f"worker-{index}.json", {"sha256": digest.hexdigest(), "history": history})


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model through a temporary name and an atomic rename."""
    import os

    tmp = path.with_name(".tmp-" + path.name)
    model.save(tmp)
    os.replace(tmp, path)


def write_plots(task: Any, run: Run, splits: Any, history: dict, folder: Path) -> None:
    """Learning curves for every run, then the task's own plots."""
    folder.mkdir(exist_ok=True)
    plot_history(history, folder / "learning_curves.png")
    task.plots(run, splits, folder)


def read_history(path: Path) -> list[dict]:
    """Rows of a run's history.csv as dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
