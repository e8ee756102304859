"""TensorBoard logs (``train.tensorboard``): every run's ``logs/train`` and ``logs/validation``.

The event files are read here with TensorFlow's own reader (``summary_iterator``), not with
seqapp's, and with TensorBoard's where it is installed (the ``[tensorboard]`` extra). The
tiny runs of the session are read as they are; the resume test trains one small run, stopped
twice and resumed twice.
"""

from __future__ import annotations

import csv
import importlib.abc
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from conftest import CORPUS

from seqapp import checkpoint, drafts, faults, tensorboard_log, training
from seqapp.tasks import REGISTRY, load_config
from seqapp.tasks.textgen import EPOCH_TOKENS


def events(run_path: Path) -> list[tuple[str, str, int, object]]:
    """``(writer, tag, step, value)`` of every summary under ``run_path/logs``, by TensorFlow's reader."""
    import tensorflow as tf

    found = []
    for path in sorted((run_path / "logs").rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                item = tf.make_ndarray(value.tensor).item()
                plugin = value.metadata.plugin_data.plugin_name
                assert plugin == ("text" if isinstance(item, bytes) else "scalars"), (value.tag, plugin)
                found.append((path.parent.name, value.tag, event.step, item.decode() if plugin == "text" else item))
    return found


def history_rows(run_path: Path) -> list[dict]:
    with open(run_path / "history.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def scalars_match_history(run_path: Path) -> None:
    """Each history.csv cell is one scalar (once) at step = its epoch, with its value (float32)."""
    scalars = [(writer, tag, step) for writer, tag, step, value in events(run_path) if not isinstance(value, str)]
    assert not [key for key, count in Counter(scalars).items() if count > 1], "a step written twice"
    values = {(writer, tag, step): value for writer, tag, step, value in events(run_path)}
    expected = set()
    for row in history_rows(run_path):
        for column, cell in row.items():
            if column == "epoch" or cell == "":
                continue
            writer, tag = ("validation", column[4:]) if column.startswith("val_") else ("train", column)
            key = (writer, f"epoch_{tag}", int(row["epoch"]))
            expected.add(key)
            assert values[key] == pytest.approx(float(cell), rel=1e-6), key
    assert set(scalars) == expected
    assert ("train", "epoch_learning_rate", 0) in expected and ("validation", "epoch_loss", 0) in expected


def texts(run_path: Path) -> dict[int, str]:
    found = [(step, value) for _, tag, step, value in events(run_path) if tag == tensorboard_log.SAMPLE_TAG]
    assert len({step for step, _ in found}) == len(found), "a sample written twice"
    return dict(found)


@pytest.mark.parametrize("task", sorted(REGISTRY))
def test_every_run_logs_its_history_for_tensorboard(tiny_runs, task):
    run = tiny_runs(task)
    assert sorted(path.name for path in (run.path / "logs").iterdir()) == ["train", "validation"]
    scalars_match_history(run.path)
    samples = texts(run.path)
    if task == "textgen":  # the default seed, then EPOCH_TOKENS generated characters, as a Markdown code block
        lines = samples[0].split("\n")
        assert list(samples) == [0] and all(line.startswith("    ") for line in lines)
        text = "\n".join(line[4:] for line in lines)
        assert text.startswith(run.preprocessing["default_seed"])
        assert len(text) == len(run.preprocessing["default_seed"]) + EPOCH_TOKENS
    elif task == "translate":  # four validation sources beside their references
        lines = samples[0].split("\n")
        assert lines[0] == "| source | reference | greedy translation |" and len(lines) == 2 + 4
        sources = [source for source, _ in REGISTRY["translate"]().load_data(run.config).val[:4]]
        assert [line.split(" | ")[0][2:] for line in lines[2:]] == sources
    else:
        assert samples == {}


@pytest.mark.process  # interrupts trainings
def test_a_resumed_training_logs_every_epoch_once(tmp_path, monkeypatch):
    """Stopped at the end of epoch 1 (after its state was saved, before its logs: a signal on its
    last batch), then inside epoch 3: the scalars of all three epochs once each; the sample of
    epoch 1 is lost with the weights it would have shown, the others are there."""
    cfg = load_config("textgen", [*REGISTRY["textgen"].tiny["set"], "train.epochs=3", "train.jit_compile=false",
                                  "train.litert=false", "train.checkpoint_every=4"], {"data.text": CORPUS})
    batches = 15  # an epoch of CORPUS at the tiny settings (the state's epoch and step below say if not)
    monkeypatch.setenv("SEQAPP_FAULT", f"batch@{batches}:TERM")  # an epoch's last batch
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted) as stopped:
        training.train(cfg, tmp_path, verbose=0, log=lambda _: None)
    draft = stopped.value.draft
    state = checkpoint.load(draft)
    assert (state.epoch, state.step) == (1, 0) and not (draft / "logs").exists()

    monkeypatch.setenv("SEQAPP_FAULT", f"batch@{batches + 6}:INT")  # batch 6 of epoch 3 (the resume begins at 2)
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted):
        training.resume(draft, tmp_path, verbose=0, log=lambda _: None)
    assert checkpoint.load(draft).epoch == 2 and sorted(texts(draft)) == [1]

    monkeypatch.delenv("SEQAPP_FAULT")
    run = training.resume(draft, tmp_path, verbose=0, log=lambda _: None)
    assert len(history_rows(run.path)) == 3
    scalars_match_history(run.path)
    assert sorted(texts(run.path)) == [1, 2]
    assert len(list((run.path / "logs" / "train").iterdir())) == 2  # one event file per training that wrote


class NoTensorBoard(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "tensorboard":
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None


def test_writing_needs_no_tensorboard_and_a_restart_fills_only_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "meta_path", [NoTensorBoard(), *sys.meta_path])
    history = {"loss": [2.0, 1.5], "val_loss": [2.5, 2.0], "learning_rate": [0.01, 0.01]}
    with tensorboard_log.writing(tmp_path, history, lambda model: f"text {len(history['loss'])}") as (epoch_log,):
        epoch_log.on_epoch_end(1)  # writes epochs 0 and 1: the history's rows not in the files yet
    history["loss"].append(1.25)
    history["val_loss"].append(1.75)
    history["learning_rate"].append(0.005)
    history["accuracy"] = [None, None, 0.5]  # a column a resumed training logs from now on
    with tensorboard_log.writing(tmp_path, history) as (epoch_log,):  # at its start: the rows missing
        pass
    assert [event for event in events(tmp_path) if event[1] == "epoch_loss"] == [
        ("train", "epoch_loss", 0, 2.0), ("train", "epoch_loss", 1, 1.5), ("train", "epoch_loss", 2, 1.25),
        ("validation", "epoch_loss", 0, 2.5), ("validation", "epoch_loss", 1, 2.0),
        ("validation", "epoch_loss", 2, 1.75)]
    assert [event[2:] for event in events(tmp_path) if event[1] in ("epoch_accuracy", "sample")] == [
        (1, "text 2"), (2, 0.5)]
    assert "tensorboard" not in sys.modules


def test_a_record_cut_short_by_a_kill_ends_its_file_and_the_restart_writes_the_rest(tmp_path):
    history = {"loss": [2.0, 1.5]}
    with tensorboard_log.writing(tmp_path, history):
        pass
    (path,) = (tmp_path / "logs" / "train").iterdir()
    path.write_bytes(path.read_bytes()[:-5])  # epoch 1's record, half written
    with tensorboard_log.writing(tmp_path, history):
        pass
    steps = [step for _, _, step, _ in tensorboard_log.read_events(tmp_path / "logs")]
    assert steps == [0, 1]


def test_a_failing_sample_is_dropped_with_a_warning_and_the_training_goes_on(tmp_path, caplog):
    def broken(model):
        raise ValueError("no")

    with tensorboard_log.writing(tmp_path, {"loss": [1.0, 0.5]}, broken) as (epoch_log,):
        epoch_log.on_epoch_end(0)
        epoch_log.on_epoch_end(1)
    assert caplog.text.count("the sample for TensorBoard failed (ValueError: no)") == 1
    assert [tag for _, tag, _, _ in tensorboard_log.read_events(tmp_path / "logs")] == ["epoch_loss"] * 2


@pytest.mark.parametrize("setting, chief", [(False, True), (True, False)])
def test_no_logs_when_turned_off_or_on_a_worker_other_than_the_chief(tmp_path, setting, chief):
    cfg = load_config("sentiment", [f"train.tensorboard={str(setting).lower()}"])
    with training.epoch_logs(None, cfg, tmp_path, checkpoint.State(), chief) as callbacks:
        assert callbacks == []
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_reads_the_logs(tiny_runs):
    """With the [tensorboard] extra: TensorBoard's own reader sees scalars and texts under their plugins."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_accumulator

    run = tiny_runs("textgen")
    train = event_accumulator.EventAccumulator(str(run.path / "logs" / "train"))
    train.Reload()
    assert set(train.PluginTagToContent("scalars")) == {"epoch_loss", "epoch_learning_rate"}
    assert set(train.PluginTagToContent("text")) == {"sample"}
    assert [event.step for event in train.Tensors("epoch_loss")] == [0]


@pytest.mark.process
def test_two_workers_log_on_the_chief(tmp_path):
    """Under seqapp's own multi-worker loop the chief's callbacks write the logs of every epoch."""
    from seqapp.tasks import load_run

    sets = [*REGISTRY["textgen"].tiny["set"], "train.litert=false", "train.jit_compile=false"]
    (tmp_path / "corpus.txt").write_text(CORPUS, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir",
                           str(tmp_path / "worker-logs"), "--", "train", "textgen", "--epochs", "2", "--quiet",
                           "--data", str(tmp_path / "corpus.txt"), "--out", str(tmp_path / "runs"),
                           *[arg for item in sets for arg in ("--set", item)]],
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_path,) = (tmp_path / "runs" / "textgen").iterdir()
    assert json.loads((run_path / "distribute.json").read_text())["workers"] == 2
    scalars_match_history(run_path)
    assert sorted(texts(run_path)) == [0, 1] and load_run(run_path).metrics["epochs_trained"] == 2
