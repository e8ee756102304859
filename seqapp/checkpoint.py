"""The training state: saved while training runs, so an interrupted training resumes exactly.

A training's draft folder (see :mod:`seqapp.drafts`) holds one ``training-state.npz``:
every variable of the model (weights and the dropout seed state), of the optimizer (step
count and moments) and of the loss metrics, the best weights so far, and JSON
bookkeeping: the epochs and batches done, the history, the early-stopping counters, and
the fingerprint of the settings the training began with (a resume refuses a config.yaml
edited since, see :func:`seqapp.drafts.check_settings`). It is
rewritten at the end of every epoch (every ``train.checkpoint_every`` batches too, when
set) and when Ctrl-C or SIGTERM stops the training, through a temporary file and an atomic
rename: a kill at any instant leaves the previous state or the new one, never half of one.

With the data order a function of the seed and the epoch (:func:`seqapp.pipeline.shuffled`),
a training resumed from this state ends with the same weights, bit for bit, as one that
never stopped.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from seqapp import faults
from seqapp.config import TrainConfig
from seqapp.drafts import STATE_FILE, Interrupted, info_problem, read_state_meta
from seqapp.errors import SeqappError

log = logging.getLogger("seqapp")

FORMAT = 1
GROUPS = ("model", "optimizer", "metrics")


@dataclass
class State:
    """Where a training stands: ``epoch`` epochs done, then ``step`` batches of the next."""

    epoch: int = 0
    step: int = 0
    history: dict = field(default_factory=dict)
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    done: bool = False
    # The settings the training began with (:func:`seqapp.drafts.settings_of`); None in a state of seqapp 0.2 or older.
    settings: dict | None = None
    arrays: dict = field(default_factory=dict, repr=False)

    def meta(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "arrays"} | {"format": FORMAT}


def variables(model: Any) -> dict[str, list]:
    """The variables a state holds, by group, in a fixed order for a given model."""
    return {"model": list(model.variables), "optimizer": list(model.optimizer.variables),
            "metrics": list(model.metrics_variables)}


def save(folder: Path, state: State) -> None:
    """Write ``state`` as ``folder/training-state.npz`` through a temporary file and a rename."""
    arrays = {f"{group}/{i:05d}": value for group, values in state.arrays.items() for i, value in enumerate(values)}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(state.meta())), **arrays)
    path = folder / STATE_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            faults.point("state_write")
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise SeqappError(f"cannot save the training state in {folder} ({exc.strerror or exc}); "
                          "free some disk space") from None


def load(folder: Path) -> State | None:
    """The state saved in ``folder``, or None when the training never saved one."""
    path = folder / STATE_FILE
    meta = read_state_meta(path)
    if meta is None:
        return None
    if meta.get("format") != FORMAT:
        raise SeqappError(f"{path} was written by another version of seqapp; start a new training", resumable=False)
    arrays: dict[str, list] = {group: [] for group in (*GROUPS, "best")}
    with np.load(path, allow_pickle=False) as npz:
        for key in sorted(npz.files):
            group, _, _ = key.partition("/")
            if group in arrays:
                arrays[group].append(npz[key])
    known = {name for name in State.__dataclass_fields__ if name != "arrays"}
    fields = {key: value for key, value in meta.items() if key in known}
    return State(**fields, arrays=arrays)


def restore(model: Any, arrays: dict, groups: tuple[str, ...]) -> None:
    """Assign saved arrays to the model's variables (built already), checking they match."""
    if "optimizer" in groups and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    current = variables(model)
    for group in groups:
        targets, values = current[group], arrays.get(group, [])
        shapes = [tuple(v.shape) for v in targets], [tuple(a.shape) for a in values]
        if shapes[0] != shapes[1]:
            raise SeqappError(f"the saved training state does not fit this model ({group} variables differ); "
                              "start a new training", resumable=False)
        for variable, value in zip(targets, values):
            variable.assign(value)


def build_metrics(model: Any, dataset: Any) -> None:
    """Create the compiled metrics' variables now (Keras makes them in the first training step),
    so a resumed epoch can be given the metric totals it had reached."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(next(iter(dataset.take(1))))
    model.compute_metrics(x, y, model(x, training=False), sample_weight=sample_weight)


class SignalGuard:
    """SIGINT and SIGTERM while a training runs.

    Inside ``fit`` (``deferring``) the first signal asks for a stop at the end of the
    current batch, where the state is saved; a second one, or one at any other moment,
    stops at once with :class:`Interrupted`. With ``epochs_only`` (several workers) the state
    is saved at epoch ends only, and the first signal's note says so.
    """

    def __init__(self) -> None:
        self.pending: int | None = None
        self.deferring = False
        self.epochs_only = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.deferring and self.pending is None:
            self.pending = signum
            log.info(self.note())
            return
        raise Interrupted(signum)

    def note(self) -> str:
        """What the first signal inside ``fit`` does, in one line."""
        if self.epochs_only:
            return ("stopping after this batch; with several workers the training state is saved at epoch ends "
                    "only, so a resume starts from the last finished epoch (press Ctrl-C again to stop at once)")
        return "stopping after this batch to save the training state (press Ctrl-C again to stop at once)"


class Checkpointer(keras.callbacks.Callback):
    """Early stopping, best weights, history.csv and the training state, all resumable.

    One instance follows a whole training, across the ``fit`` calls of a resumed one; it
    plays the part of Keras's EarlyStopping (``patience``, best weights restored at the
    end), ModelCheckpoint and CSVLogger, keeping their state in :class:`State`.
    """

    def __init__(self, folder: Path, cfg: TrainConfig, monitor: str, state: State, guard: SignalGuard,
                 data_epoch: Any) -> None:
        super().__init__()
        self.folder, self.cfg, self.monitor, self.state, self.guard = folder, cfg, monitor, state, guard
        self.data_epoch = data_epoch
        self.restore_pending = bool(state.arrays.get("model"))
        self.pause_after_epoch = False
        self.epoch = self.step = 0
        # Several workers save only where they all are: at an epoch's end (the last one is resumed).
        self.epochs_only = False

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.restore_pending:  # fit has built the optimizer and metrics by now
            restore(self.model, self.state.arrays, ("model", "optimizer"))
            self.restore_pending = False

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.step = epoch, 0
        self.data_epoch.assign(epoch)
        if epoch == self.state.epoch and self.state.step:  # a resumed epoch: its loss so far counts too
            restore(self.model, self.state.arrays, ("metrics",))
            self.step = self.state.step

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            raise SeqappError(f"the training diverged: the loss became {loss} in epoch {self.epoch + 1}, batch "
                              f"{self.step}; lower train.learning_rate (or set train.clipnorm) and train again")
        faults.point("batch")
        # On an epoch's last batch the epoch ends first (validation, then the state is saved).
        last = batch + 1 == self.params.get("steps")
        stopping = self.guard.pending is not None and not last
        if stopping and self.epochs_only:
            raise Interrupted(self.guard.pending)
        every = 0 if self.epochs_only else self.cfg.checkpoint_every
        if stopping or (every and self.step % every == 0 and not last):
            self.save(self.epoch, self.step)
        if stopping:
            raise Interrupted(self.guard.pending, saved=True)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {key: float(value) for key, value in (logs or {}).items()}
        # the rate after this epoch (a schedule's value); a variable under a distribution strategy
        logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        done = max((len(values) for values in self.state.history.values()), default=0)
        for key, value in logs.items():
            # a column new to a resumed training (one begun by an older seqapp) is empty before it
            self.state.history.setdefault(key, [None] * done).append(value)
        stop = self.early_stop(epoch, logs.get(self.monitor))
        self.state.done = stop or epoch + 1 >= self.cfg.epochs
        write_history(self.folder / "history.csv", self.state.history)
        self.save(epoch + 1, 0)
        if self.guard.pending is not None:
            raise Interrupted(self.guard.pending, saved=True)
        if self.state.done or self.pause_after_epoch:
            self.model.stop_training = True

    def early_stop(self, epoch: int, current: float | None) -> bool:
        """Keras's EarlyStopping rule (min_delta 0, no baseline); True to stop now."""
        state = self.state
        if current is None or self.cfg.patience <= 0:
            return False
        if state.best is None or current < state.best:
            state.best, state.best_epoch, state.wait = current, epoch, 0
            state.arrays["best"] = [np.asarray(w) for w in self.model.get_weights()]
            return False
        state.wait += 1
        return state.wait >= self.cfg.patience

    def save(self, epoch: int, step: int) -> None:
        self.state.epoch, self.state.step = epoch, step
        if self.state.settings is None:  # what the training began with, as the draft recorded it
            self.state.settings = recorded_settings(self.folder)
        self.state.arrays.update({group: [keras.ops.convert_to_numpy(v) for v in values]
                                  for group, values in variables(self.model).items()})
        save(self.folder, self.state)


def recorded_settings(folder: Path) -> dict | None:
    """The settings fingerprint a draft's ``draft.json`` recorded when its training began (None if none)."""
    settings = info_problem(folder)[0].get("settings")
    return settings if isinstance(settings, dict) else None


def write_history(path: Path, history: dict) -> None:
    """history.csv: one row per epoch, ``epoch`` then the logged values (as Keras's CSVLogger), among
    them ``learning_rate``, the rate at the epoch's end; a value not logged that epoch is left empty."""
    keys = sorted(history)
    rows = [",".join(["epoch", *keys])]
    epochs = max((len(values) for values in history.values()), default=0)

    def cell(values: list, i: int) -> str:
        return repr(values[i]) if i < len(values) and values[i] is not None else ""

    rows += [",".join([str(i), *(cell(history[key], i) for key in keys)]) for i in range(epochs)]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(rows) + "\n", encoding="utf-8")
    os.replace(tmp, path)
