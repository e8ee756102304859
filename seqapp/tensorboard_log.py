"""TensorBoard event files of a training (``train.tensorboard``): ``RUN/logs/train`` and ``RUN/logs/validation``.

After each epoch, every history.csv column of that epoch becomes a scalar named as Keras's
own TensorBoard callback names it (``loss`` -> ``epoch_loss`` in ``train/``, ``val_loss`` ->
``epoch_loss`` in ``validation/``, so the two share a chart; ``learning_rate`` ->
``epoch_learning_rate``), at step = the epoch (history.csv's ``epoch`` column, from 0). The
task's sample of that epoch (:meth:`seqapp.tasks.base.Task.epoch_sample`: a generated text,
a few translations) goes to ``train/`` as text, tag ``sample``.

TensorFlow writes the files alone (``tf.summary.write`` with the scalar and text plugins'
metadata; ``tf.summary.scalar`` and ``tf.summary.text`` are TensorBoard's and need it
installed): the ``tensorboard`` package, the ``[tensorboard]`` extra, is needed only to look
at them (``tensorboard --logdir runs``).

An epoch is logged after the training state that holds it is saved, so the logs never run
ahead of the state. A resumed training appends new event files beside the old ones, first
writing whatever its history holds and the files do not (an epoch whose end was interrupted
between the two), so that every step of every scalar is written exactly once. Only the text
of such an epoch is lost: its weights are gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras

LOGS = "logs"  # the run's folder of event files
SAMPLE_TAG = "sample"

log = logging.getLogger("seqapp")


def writer_and_tag(column: str) -> tuple[str, str]:
    """The event folder and scalar tag of a history.csv column, as Keras's TensorBoard callback has them."""
    if column.startswith("val_"):
        return "validation", "epoch_" + column[len("val_"):]
    return "train", "epoch_" + column


def plugin_metadata(plugin: str) -> Any:
    """The SummaryMetadata that shows a summary in TensorBoard's ``plugin`` tab (its data of version 0 is empty)."""
    import tensorflow as tf

    return tf.compat.v1.SummaryMetadata(plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name=plugin))


def event_files(folder: Path) -> list[Path]:
    """The event files under ``folder`` (a run's logs/, or one of its writers' folders), in writing order."""
    return sorted(folder.rglob("events.out.tfevents.*"), key=lambda path: (path.parent.name, path.name))


def read_events(folder: Path) -> Iterator[tuple[str, str, int, Any]]:
    """``(writer, tag, step, value)`` of every summary in the event files under a run's ``logs`` folder:
    a float for a scalar, a str for a text. A record cut short by a kill ends its file."""
    import tensorflow as tf

    for path in event_files(folder):
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                for value in event.summary.value:
                    array = tf.make_ndarray(value.tensor)
                    item = array.item() if array.size == 1 else array.tolist()
                    item = item.decode() if isinstance(item, bytes) else item
                    yield path.parent.name, value.tag, int(event.step), item
        except tf.errors.DataLossError:
            continue


class EpochLog(keras.callbacks.Callback):
    """Writes each epoch's row of ``history`` (the training state's, which history.csv shows) and
    the ``sample`` of the model as it stands then. Runs after the Checkpointer, which appends
    the row and saves the state."""

    def __init__(self, folder: Path, history: dict, sample: Callable[[Any], str] | None = None) -> None:
        super().__init__()
        self.folder, self.history, self.sample = Path(folder) / LOGS, history, sample
        self.writers: dict[str, Any] = {}
        self.last_step: dict[tuple[str, str], int] = {}
        if self.folder.is_dir():  # a resumed training: what the files hold already
            for writer, tag, step, _ in read_events(self.folder):
                key = (writer, tag)
                self.last_step[key] = max(step, self.last_step.get(key, -1))
        self.write_scalars()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.write_scalars()
        if self.sample is not None:
            self.write_sample(epoch)
        self.flush()

    def write_scalars(self) -> None:
        """Every value of the history at an epoch past the last one its tag's files hold."""
        import tensorflow as tf

        metadata = plugin_metadata("scalars")
        for column, values in self.history.items():
            writer, tag = writer_and_tag(column)
            last = self.last_step.get((writer, tag), -1)
            for epoch in range(last + 1, len(values)):
                if values[epoch] is None:  # a column new to a resumed training is empty before it
                    continue
                with self.writer(writer).as_default():
                    tf.summary.write(tag, tf.constant(values[epoch], tf.float32), step=epoch, metadata=metadata)
                self.last_step[(writer, tag)] = epoch
        self.flush()

    def write_sample(self, epoch: int) -> None:
        """The task's sample as text at step ``epoch``; one that fails is dropped with a warning (the
        training goes on: a log is never worth a training)."""
        import tensorflow as tf

        try:
            text = self.sample(self.model)
        except Exception as exc:  # any failure of a display aid
            log.warning(f"the sample for TensorBoard failed ({type(exc).__name__}: {exc}); "
                        "the training goes on without it")
            self.sample = None
            return
        with self.writer("train").as_default():
            tf.summary.write(SAMPLE_TAG, tf.constant(text), step=epoch, metadata=plugin_metadata("text"))

    def writer(self, name: str) -> Any:
        """The summary writer of ``logs/<name>``, made on first use (a new event file)."""
        import tensorflow as tf

        if name not in self.writers:
            self.writers[name] = tf.summary.create_file_writer(str(self.folder / name), max_queue=1000,
                                                               flush_millis=10**9)
        return self.writers[name]

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()


@contextmanager
def writing(folder: Path, history: dict, sample: Callable[[Any], str] | None = None) -> Iterator[list]:
    """``[EpochLog]`` for ``model.fit``'s callbacks, its files closed at the end."""
    epoch_log = EpochLog(folder, history, sample)
    try:
        yield [epoch_log]
    finally:
        epoch_log.close()
