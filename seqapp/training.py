"""Training: the tf.data pipeline, seeds, callbacks, and the whole train-and-save flow.

``train(cfg)`` is the flow of one run::

    task.load_data -> task.fit_preprocessing -> task.build_model -> fit (tf.data, callbacks)
        -> runs: model.keras, preprocessing.json, config.yaml, history.csv, plots, metrics.json
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqapp import config as config_mod
from seqapp import runs
from seqapp.config import Config, TrainConfig
from seqapp.plots import plot_history
from seqapp.runs import Run
from seqapp.tasks import get_task
from seqapp.tasks.base import Splits, Task


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow so a run can be repeated."""
    import keras

    keras.utils.set_random_seed(seed)


def make_dataset(inputs: Any, targets: Any, batch_size: int, shuffle: bool, seed: int = 0) -> Any:
    """A batched, prefetched ``tf.data`` pipeline over in-memory arrays."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle:
        size = len(targets) if not isinstance(targets, (tuple, dict)) else len(next(iter(targets)))
        dataset = dataset.shuffle(min(size, 100_000), seed=seed, reshuffle_each_iteration=True)
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
    return keras.optimizers.Adam(learning_rate=learning_rate, clipnorm=cfg.clipnorm or None)


def fit(model: Any, train_ds: Any, val_ds: Any, cfg: TrainConfig, folder: Path, verbose: int | None = None) -> dict:
    """``model.fit`` with early stopping, best-weights restore, checkpoints and a CSV log.

    Returns the Keras history dict. With no validation data, early stopping and the best
    checkpoint follow the training loss instead.
    """
    import keras

    monitor = "val_loss" if val_ds is not None else "loss"
    (folder / "checkpoints").mkdir(exist_ok=True)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience, restore_best_weights=True)
        if cfg.patience > 0 else keras.callbacks.Callback(),
        keras.callbacks.ModelCheckpoint(folder / "checkpoints" / "best.weights.h5", monitor=monitor,
                                        save_best_only=True, save_weights_only=True),
        keras.callbacks.CSVLogger(str(folder / "history.csv")),
    ]
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    if cfg.jit_compile is not None:
        model.jit_compile = cfg.jit_compile  # Keras warns and stays off where a layer cannot be compiled
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, verbose=verbose,
                        shuffle=False)  # tf.data shuffles
    return history.history


@dataclass
class Prepared:
    """Everything a training run needs before ``fit``: the task, its data and its model."""

    task: Task
    splits: Splits
    preprocessing: dict
    model: Any
    train_ds: Any
    val_ds: Any


def prepare(cfg: Config) -> Prepared:
    """Seed, read and split the data, fit the preprocessing, build the model and pipelines.

    The first half of :func:`train`; benchmarks and tests that time or inspect training
    call it instead of repeating the steps.
    """
    task = get_task(cfg.task)()
    set_seed(cfg.train.random_seed)
    splits = task.load_data(cfg)
    prep = task.fit_preprocessing(cfg, splits)
    model = task.build_model(cfg, prep)
    train_ds, val_ds = task.datasets(cfg, prep, splits)
    return Prepared(task, splits, prep, model, train_ds, val_ds)


def train(cfg: Config, out: Path, name: str | None = None, verbose: int | None = None,
          log: Callable[[str], None] = print) -> Run:
    """Train a run for ``cfg`` and save it under ``out``; return the published Run."""
    ready = prepare(cfg)
    task, splits, model = ready.task, ready.splits, ready.model
    log(f"training {cfg.task}: {model.count_params():,} parameters, up to {cfg.train.epochs} epochs")
    with runs.create(out, cfg.task, name) as draft:
        history = fit(model, ready.train_ds, ready.val_ds, cfg.train, draft.path, verbose)
        save_model(model, draft.path / "model.keras")
        runs.write_json(draft.path / "preprocessing.json", ready.preprocessing)
        config_mod.save(cfg, draft.path / "config.yaml")
        run = Run(path=draft.path, config=cfg, preprocessing=ready.preprocessing, _model=model)
        metrics = task.evaluate(run, splits)
        metrics["epochs_trained"] = len(next(iter(history.values()), []))
        runs.write_json(draft.path / "metrics.json", metrics)
        write_plots(task, run, splits, history, draft.path / "plots")
        remove_checkpoints(draft.path)
    run.path = draft.final
    return run


def save_model(model: Any, path: Path) -> None:
    """Save a Keras model through a temporary name and an atomic rename."""
    import os

    tmp = path.with_name(".tmp-" + path.name)
    model.save(tmp)
    os.replace(tmp, path)


def remove_checkpoints(folder: Path) -> None:
    """Drop the in-progress checkpoints once the final model is saved."""
    import shutil

    shutil.rmtree(folder / "checkpoints", ignore_errors=True)


def write_plots(task: Any, run: Run, splits: Any, history: dict, folder: Path) -> None:
    """Learning curves for every run, then the task's own plots."""
    folder.mkdir(exist_ok=True)
    plot_history(history, folder / "learning_curves.png")
    task.plots(run, splits, folder)


def read_history(path: Path) -> list[dict]:
    """Rows of a run's history.csv as dicts."""
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
