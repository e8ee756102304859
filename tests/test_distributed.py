"""Multi-worker training (``train.distribute``, ``seqapp launch``).

The default tests check the strategy choice, TF_CONFIG parsing and the step's loss; the
``process`` tests start workers: how a launch fails, the tiny runs trained by two local
workers against one process, and a worker killed and resumed with the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import CORPUS, tiny_config

from seqapp import distribute, launch
from seqapp.errors import SeqappError

TWO = json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 1}})


def test_cluster_reads_tf_config():
    assert distribute.cluster(None) == (1, 0)
    assert distribute.cluster(TWO) == (2, 1)
    chief = {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "worker", "index": 0}}
    assert distribute.cluster(json.dumps(chief)) == (3, 1)


@pytest.mark.parametrize("bad", ["{not json", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"index": 4}})])
def test_cluster_refuses_a_bad_tf_config_in_one_line(bad):
    with pytest.raises(SeqappError, match="TF_CONFIG") as caught:
        distribute.cluster(bad)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(("mode", "tf_config", "gpus", "expected"), [
    ("auto", None, 0, "none"),
    ("auto", None, 1, "none"),
    ("auto", None, 2, "mirrored"),
    ("auto", TWO, 2, "multi_worker"),
    ("auto", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"index": 0}}), 0, "none"),
    ("none", TWO, 4, "none"),
    ("mirrored", None, 0, "mirrored"),
])
def test_auto_resolution(mode, tf_config, gpus, expected):
    assert distribute.resolve(mode, tf_config, gpus) == expected


def test_tf_configs_name_every_worker_on_distinct_ports():
    ports = launch.free_ports(3)
    assert len(set(ports)) == 3
    configs = [json.loads(text) for text in launch.tf_configs(ports)]
    assert [config["task"]["index"] for config in configs] == [0, 1, 2]
    assert all(config["cluster"]["worker"] == [f"127.0.0.1:{port}" for port in ports] for config in configs)


@pytest.mark.process
def test_a_failing_worker_stops_the_others(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(SeqappError, match=r"worker 1 of 2 failed \(exit 3\); see .*worker-1.log"):
        launch.wait_all([sleeper, failing], tmp_path)
    assert sleeper.poll() is not None and time.monotonic() - started < 30


@pytest.mark.process
def test_launch_fails_in_one_line_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(tmp_path),
                             "--", "train", "no-such-task"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker ") and "failed (exit 2)" in last


def tiny_args(task: str, batch_size: int, data: str | None = None, epochs: int = 2) -> list[str]:
    """The tiny run of ``task``, with neither gradient clipping nor dropout: both differ
    between replicas and one process (see the README), the rest must agree."""
    from seqapp.tasks import REGISTRY

    sets = [item for item in REGISTRY[task].tiny["set"] if not item.startswith("train.batch_size")]
    sets += [f"train.batch_size={batch_size}", "train.clipnorm=0", "model.dropout=0"]
    data_args = ["--data", data] if data else []
    return ["train", task, "--epochs", str(epochs), "--quiet", *data_args,
            *[arg for item in sets for arg in ("--set", item)]]


def imbalanced_sentiment(folder) -> str:
    """The bundled sentiment data without two of every three negative texts, so the class
    weights (sample weights of the loss) are not all 1."""
    from seqapp import datafiles

    lines = datafiles.bundled("sentiment.tsv").read_text(encoding="utf-8").splitlines()
    negatives = [line for line in lines if line.endswith("\tnegative")]
    assert len(negatives) > 30
    kept = [line for line in lines if not line.endswith("\tnegative")] + negatives[::3]
    path = folder / "imbalanced.tsv"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return str(path)


@pytest.mark.process
@pytest.mark.parametrize("task", ["textgen", "sentiment"])  # sentiment: masked padding and class weights
def test_two_workers_train_like_one_process_with_the_global_batch(tmp_path, task):
    env = {**os.environ, "SEQAPP_WEIGHTS_DIGEST": str(tmp_path / "two")}
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    data = imbalanced_sentiment(tmp_path) if task == "sentiment" else None
    launcher = [sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(tmp_path / "logs")]
    two = subprocess.run([*launcher, "--", *tiny_args(task, 16, data), "--out", str(tmp_path / "runs2")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    published = list((tmp_path / "runs2" / task).iterdir())
    assert len(published) == 1 and not published[0].name.startswith(".")
    info = json.loads((published[0] / "distribute.json").read_text())
    devices = info.pop("devices")  # the chief's: one replica
    assert len(devices) == 1 and devices[0].startswith("/job:worker/") and "/device:" in devices[0]
    assert info == {"strategy": "multi_worker", "workers": 2, "replicas": 2, "batch_size_per_replica": 16,
                    "global_batch_size": 32}
    chief, other = (json.loads((tmp_path / "two" / f"worker-{i}.json").read_text()) for i in (0, 1))
    assert chief["sha256"] == other["sha256"]

    env["SEQAPP_WEIGHTS_DIGEST"] = str(tmp_path / "one")
    one = subprocess.run([sys.executable, "-m", "seqapp", *tiny_args(task, 32, data), "--set", "train.distribute=none",
                          "--out", str(tmp_path / "runs1")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "one" / "worker-0.json").read_text())
    for key in ("loss", "val_loss"):
        assert chief["history"][key] == pytest.approx(single["history"][key], abs=1e-4)


def test_mirrored_trains_with_fit_and_records_the_strategy(tmp_path):
    """One replica on a CPU: the strategy's scope, fit and the record, without a cluster."""
    from seqapp.training import train

    cfg = tiny_config("textgen", "train.distribute=mirrored", "train.litert=false", "train.jit_compile=false",
                      values={"data.text": CORPUS})
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    info = json.loads((run.path / "distribute.json").read_text())
    assert info["strategy"] == "mirrored" and info["global_batch_size"] == 16 * info["replicas"]
    assert len(info["devices"]) == info["replicas"]
    assert run.metrics["epochs_trained"] == 1


@pytest.mark.parametrize("case", ["binary", "sequence", "masked sequence"])
def test_the_step_loss_is_keras_loss_with_sample_weights_and_masks(case):
    """Sum and divisor as the distributed step splits them give Keras's own loss value
    (binary: sentiment's shapes, a class weight per text; sequence: a weight per step)."""
    import keras
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    if case == "binary":
        y, y_pred = tf.constant(rng.integers(0, 2, (4, 1)), tf.float32), tf.constant(rng.random((4, 1)), tf.float32)
        weights, loss = tf.constant([0.5, 2.0, 1.0, 3.0]), keras.losses.BinaryCrossentropy()
    else:
        y = tf.constant(rng.integers(0, 5, (4, 6)), tf.int32)
        y_pred = tf.nn.softmax(tf.constant(rng.normal(size=(4, 6, 5)), tf.float32))
        weights, loss = tf.constant(rng.random((4, 6)), tf.float32), keras.losses.SparseCategoricalCrossentropy()
    if case == "masked sequence":
        y_pred._keras_mask = tf.constant(rng.random((4, 6)) > 0.3)
    loss_sum, divisor = distribute.weighted_losses(loss, y, y_pred, weights)
    assert float(loss_sum / divisor) == pytest.approx(float(loss(y, y_pred, sample_weight=weights)), rel=1e-6)


def test_the_devices_of_a_single_process_are_named():
    import tensorflow as tf

    devices = distribute.Plan("none", tf.distribute.get_strategy()).devices()
    assert len(devices) == 1 and "/device:" in devices[0]
    assert distribute.Plan("none", tf.distribute.get_strategy()).info(8)["devices"] == devices


def test_worker_backups_are_out_of_the_runs_and_removed_when_done(tmp_path):
    from seqapp import drafts, runs

    home = drafts.worker_home(tmp_path, 1)
    first, second = home / "textgen" / ".draft-a", drafts.worker_home(tmp_path, 2) / "textgen" / ".draft-b"
    for folder in (first, second):
        folder.mkdir(parents=True)
        (folder / "training-state.npz").write_bytes(b"x")
    assert runs.run_dirs(tmp_path) == [] and drafts.find(tmp_path) == []
    drafts.remove_backup(first)
    assert not home.exists() and second.is_dir()  # the other worker's backup stays
    drafts.remove_backup(second)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_worker_is_told_to_resume_all_workers(monkeypatch, tmp_path):
    from seqapp import drafts

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert drafts.resume_command(tmp_path) == f"seqapp train --resume {tmp_path}"
    monkeypatch.setenv("TF_CONFIG", TWO)
    assert drafts.resume_command(tmp_path).startswith(f"seqapp launch --workers 2 -- train --resume {tmp_path}")
    assert launch.worker_index() == 1


def test_a_fault_point_can_name_one_worker(monkeypatch):
    from seqapp import faults

    monkeypatch.setenv("TF_CONFIG", TWO)
    assert faults.this_worker(None) and faults.this_worker("1") and not faults.this_worker("0")


@pytest.mark.process
def test_a_worker_that_dies_is_resumed_with_the_others_from_the_last_epoch(tmp_path):
    """Worker 1 is killed in the second of three epochs: the launch fails in one line, the
    chief's draft and worker 1's backup hold epoch 1, and resuming all workers ends as one
    uninterrupted process with the global batch does."""
    digests = tmp_path / "two"
    digests.mkdir()
    out = ["--out", str(tmp_path / "runs2")]
    launcher = [sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(tmp_path / "logs"), "--"]
    env = {**os.environ, "SEQAPP_FAULT": "batch@100:KILL", "SEQAPP_FAULT_WORKER": "1"}  # 68 batches an epoch
    killed = subprocess.run([*launcher, *tiny_args("textgen", 16, epochs=3), *out], env=env, capture_output=True,
                            text=True, timeout=600)
    assert killed.returncode == 2
    assert "error: worker 1 of 2 failed (exit -9)" in killed.stderr.strip().splitlines()[-1]
    assert [path.name for path in (tmp_path / "runs2" / ".workers").iterdir()] == ["worker-1"]

    env = {**os.environ, "SEQAPP_WEIGHTS_DIGEST": str(digests)}
    resumed = subprocess.run([*launcher, "train", "--resume", *out], env=env, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at epoch 2" in resumed.stderr + resumed.stdout
    assert len(list((tmp_path / "runs2" / "textgen").iterdir())) == 1
    assert not (tmp_path / "runs2" / ".workers").exists()
    chief, other = (json.loads((digests / f"worker-{i}.json").read_text()) for i in (0, 1))
    assert chief["sha256"] == other["sha256"]

    env["SEQAPP_WEIGHTS_DIGEST"] = str(tmp_path / "one")
    (tmp_path / "one").mkdir()
    one = subprocess.run([sys.executable, "-m", "seqapp", *tiny_args("textgen", 32, epochs=3), "--set",
                          "train.distribute=none", "--out", str(tmp_path / "runs1")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "one" / "worker-0.json").read_text())
    for key in ("loss", "val_loss"):
        assert chief["history"][key] == pytest.approx(single["history"][key], abs=1e-4)
