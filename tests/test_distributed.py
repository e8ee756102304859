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


# -- the start of a multi-worker training: bounded, interruptible, one line when it fails -----------------
def cluster_config(ports: list[int], index: int = 0) -> str:
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def test_members_are_every_worker_of_tf_config_with_its_address():
    spec = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "[::1]:3"]}, "task": {"type": "worker", "index": 1}}
    everyone, index = distribute.members(json.dumps(spec))
    assert index == 2 and everyone[index].address == "::1:3"
    assert [(peer.index, peer.host, peer.port) for peer in everyone] == [(0, "a", 1), (1, "b", 2), (2, "::1", 3)]


@pytest.mark.parametrize("address", ["a", "a:", ":80", "a:port", "a:0", "a:70000", 23456])
def test_a_worker_address_without_host_and_port_is_one_line(address):
    spec = {"cluster": {"worker": ["a:1", address]}, "task": {"type": "worker", "index": 0}}
    with pytest.raises(SeqappError, match=r"TF_CONFIG names .* for worker 1; give every worker as host:port") as caught:
        distribute.members(json.dumps(spec))
    assert "\n" not in str(caught.value)


def test_the_wait_for_peers_ends_as_soon_as_every_peer_listens():
    import socket

    with socket.create_server(("127.0.0.1", 0)) as listener:
        peer = distribute.Peer(1, "127.0.0.1", listener.getsockname()[1])
        began = time.monotonic()
        distribute.wait_for_peers([peer], 5.0, pytest.fail)  # no progress line: it is there at once
    assert time.monotonic() - began < 1.0


def test_the_wait_for_peers_gives_up_in_one_line_naming_the_missing_worker():
    peer = distribute.Peer(1, "127.0.0.1", launch.free_ports(1)[0])  # free: nothing listens there
    began = time.monotonic()
    with pytest.raises(SeqappError) as caught:
        distribute.wait_for_peers([peer], 0.3, lambda _: None)
    assert 0.3 <= time.monotonic() - began < 1.5
    message = str(caught.value)
    assert message.startswith(f"worker 1 at {peer.address} (connection refused) did not start within 0.3 s; ")
    assert "train.peer_wait_s" in message and "\n" not in message


def test_the_wait_for_peers_says_whom_it_waits_for_every_few_seconds():
    """A simulated clock: worker 2 answers at once, worker 1 after 23 s."""
    now, lines = [0.0], []
    peers = [distribute.Peer(1, "a", 1), distribute.Peer(2, "b", 2)]

    def probe(host: str, port: int, timeout: float) -> str | None:
        return "connection refused" if host == "a" and now[0] < 23 else None

    def sleep(seconds: float) -> None:
        now[0] += seconds

    distribute.wait_for_peers(peers, 300, lines.append, probe, lambda: now[0], sleep)
    assert lines == [f"waiting for worker 1 at a:1 to start ({seconds} s of 300 s, train.peer_wait_s)"
                     for seconds in (5, 15)]


def test_a_worker_holds_its_port_while_it_waits_and_refuses_one_in_use():
    import socket

    port = launch.free_ports(1)[0]
    me = distribute.Peer(0, "127.0.0.1", port)
    with distribute.holding_port(me):
        assert distribute.knock("127.0.0.1", port, 1.0) is None  # the others see this worker is up
    with socket.create_server(("", port)), pytest.raises(SeqappError) as caught, distribute.holding_port(me):
        pass
    assert str(caught.value).startswith(f"this worker's port {port} (127.0.0.1:{port}, worker 0 in TF_CONFIG) cannot "
                                        "be used: another program holds it; ")


def test_the_log_folder_of_a_launch_is_checked_before_any_worker_starts(tmp_path):
    given = tmp_path / "a-file.log"
    given.write_text("keep me")
    for bad, message in ((given, "is a file, not a folder"), (given / "logs", "cannot create --log-dir")):
        with pytest.raises(SeqappError, match=message) as caught:
            launch.log_folder(bad)
        assert "\n" not in str(caught.value)
    assert given.read_text() == "keep me"
    assert launch.log_folder(tmp_path / "new" / "logs").is_dir()


def test_a_failed_worker_is_named_with_its_own_error_line(tmp_path):
    (tmp_path / "worker-1.log").write_text("training textgen\nerror: this worker's port 5 cannot be used\n")
    assert launch.failure(1, 2, 2, tmp_path) == (f"worker 1 of 2 failed (exit 2): this worker's port 5 cannot be used; "
                                                 f"see {tmp_path / 'worker-1.log'}")
    assert launch.failure(0, 2, 2, tmp_path) == "worker 0 of 2 failed (exit 2); its output is above"


def start_seqapp(tmp_path, args: list[str], tf_config: str | None = None, **env: str) -> subprocess.Popen:
    """``python -m seqapp ARGS`` with its stdout and stderr in files of ``tmp_path``, unbuffered."""
    environment = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    if tf_config is not None:
        environment["TF_CONFIG"] = tf_config
    with open(tmp_path / "stdout.txt", "wb") as stdout, open(tmp_path / "stderr.txt", "wb") as stderr:
        return subprocess.Popen([sys.executable, "-m", "seqapp", *args], env=environment, stdout=stdout,
                                stderr=stderr)


def wait_for_text(process: subprocess.Popen, path, text: str, timeout: float = 240) -> None:
    """Wait until the file at ``path`` holds ``text`` (the process still running)."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text(errors="replace"):
        assert process.poll() is None, path.read_text(errors="replace")[-2000:]
        assert time.monotonic() < deadline, f"no {text!r} after {timeout} s"
        time.sleep(0.1)


def ended_within(process: subprocess.Popen, seconds: float) -> float:
    """How long ``process`` took to end (killed, and the test failed, after ``seconds``)."""
    began = time.monotonic()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"still running {seconds} s later")
    return time.monotonic() - began


def lone_worker_args(tmp_path, wait_s: float) -> list[str]:
    return [*tiny_args("textgen", 16, epochs=1), "--set", f"train.peer_wait_s={wait_s}",
            "--out", str(tmp_path / "runs")]


@pytest.mark.process
def test_a_lone_worker_gives_up_waiting_for_its_peer_in_one_line(tmp_path):
    own, peer = launch.free_ports(2)
    began = time.monotonic()
    worker = start_seqapp(tmp_path, lone_worker_args(tmp_path, 3), cluster_config([own, peer]))
    seconds = ended_within(worker, 180)
    stderr = (tmp_path / "stderr.txt").read_text()
    print(f"lone worker, train.peer_wait_s=3: exit {worker.returncode} {time.monotonic() - began:.1f} s after start")
    assert worker.returncode == 2, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert errors == [stderr.strip().splitlines()[-1]]
    assert errors[0].startswith(f"error: worker 1 at 127.0.0.1:{peer} (connection refused) did not start within 3 s; ")
    assert not list((tmp_path / "runs").rglob(".partial-*")) and seconds >= 0


@pytest.mark.process
@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_signal_ends_the_wait_for_peers_at_once(tmp_path, signum):
    own, peer = launch.free_ports(2)
    worker = start_seqapp(tmp_path, lone_worker_args(tmp_path, 300), cluster_config([own, peer], 0))
    wait_for_text(worker, tmp_path / "stderr.txt", f"waiting for worker 1 at 127.0.0.1:{peer} to start")
    worker.send_signal(signum)
    seconds = ended_within(worker, 30)
    print(f"signal {signum} during the wait for peers: exit {worker.returncode} after {seconds:.2f} s")
    assert worker.returncode == 128 + signum and seconds < 5
    assert (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1] == "interrupted; nothing was saved"


@pytest.mark.process
def test_a_signal_during_tensorflows_set_up_ends_the_worker_at_once(tmp_path):
    """The peer's port answers (a plain socket here, no worker), so the worker goes on into
    TensorFlow's set-up, which waits for that peer holding the GIL: Ctrl-C takes its default
    action there (a shell sees 130). (SIGTERM is TensorFlow's own there: its preemption notifier
    takes it until the set-up returns.)"""
    import socket

    own, peer = launch.free_ports(2)
    with socket.create_server(("", peer)) as impostor:
        worker = start_seqapp(tmp_path, lone_worker_args(tmp_path, 300), cluster_config([own, peer]))
        impostor.settimeout(240)
        impostor.accept()[0].close()  # the worker's knock: it is past the wait now
        time.sleep(2)
        assert worker.poll() is None
        worker.send_signal(2)
        seconds = ended_within(worker, 30)
    print(f"SIGINT during TensorFlow's set-up: exit {worker.returncode} after {seconds:.2f} s")
    assert worker.returncode == -2 and seconds < 5
    assert not list((tmp_path / "runs").rglob(".partial-*"))


@pytest.mark.process
def test_a_worker_port_in_use_is_one_line(tmp_path):
    import socket

    own, peer = launch.free_ports(2)
    with socket.create_server(("", own)):
        worker = start_seqapp(tmp_path, lone_worker_args(tmp_path, 3), cluster_config([own, peer]))
        ended_within(worker, 180)
    stderr = (tmp_path / "stderr.txt").read_text().strip().splitlines()
    assert worker.returncode == 2
    assert [line for line in stderr if line.startswith("error: ")] == [stderr[-1]]
    assert stderr[-1].startswith(f"error: this worker's port {own} (127.0.0.1:{own}, worker 0 in TF_CONFIG) cannot "
                                 "be used: another program holds it; ")


@pytest.mark.process
def test_launch_refuses_a_log_dir_that_is_a_file_in_one_line(tmp_path):
    given = tmp_path / "logs"
    given.write_text("keep me")
    result = subprocess.run([sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(given), "--",
                             "train", "textgen"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: --log-dir {given} is a file, not a folder; give a folder (it is created " \
                                    "if missing) or leave --log-dir out"
    assert given.read_text() == "keep me"


WATCHED = """
import signal, sys, time
from pathlib import Path
from seqapp import distribute, drafts
watchdog = distribute.Watchdog(grace_s=0.5, save_grace_s=3.0)
assert watchdog.arm()
signal.signal(signal.SIGINT, lambda *_: None)  # a handler that returns: as if the main thread were stuck
signal.signal(signal.SIGTERM, lambda *_: None)
draft = drafts.Draft(Path(sys.argv[1]), None)
with watchdog.watching(lambda: drafts.after_signal(draft, chief=True)):
    if sys.argv[2] == "writing":
        with watchdog.writing():
            print("ready", flush=True)
            time.sleep(60)
    print("ready", flush=True)
    time.sleep(60)
"""


@pytest.mark.process
@pytest.mark.parametrize(("signum", "during"), [(2, "training"), (15, "training"), (15, "writing")])
def test_the_watchdog_ends_a_process_whose_main_thread_does_not(tmp_path, signum, during):
    """The main thread never ends the process: the watchdog does, GRACE_S after the signal
    (SAVE_GRACE_S while a state is written), keeping the draft that holds a state."""
    draft = tmp_path / ".partial-x"
    draft.mkdir()
    (draft / "training-state.npz").write_bytes(b"state")
    process = subprocess.Popen([sys.executable, "-c", WATCHED, str(draft), during], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signum)
    seconds = ended_within(process, 20)
    assert process.returncode == 128 + signum
    assert (2.8 if during == "writing" else 0.4) < seconds < (4.5 if during == "writing" else 2.0)
    assert process.stderr.read().strip().startswith("interrupted; the training state of the last finished epoch is "
                                                    f"kept. resume with: seqapp train --resume {draft}")
    assert draft.is_dir()


@pytest.mark.process
def test_the_launch_passes_a_signal_on_to_each_worker_once(tmp_path):
    """Workers in sessions of their own: a SIGTERM to the launch reaches each exactly once."""
    import signal

    worker = ("import signal, sys, time\n"
              "signal.signal(signal.SIGTERM, lambda *_: (open(sys.argv[1], 'a').write('TERM\\n'), sys.exit(143)))\n"
              "time.sleep(60)\n")
    with launch.Relay() as relay:
        for index in range(2):
            relay.processes.append(subprocess.Popen([sys.executable, "-c", worker, str(tmp_path / f"{index}.txt")],
                                                    start_new_session=True))
        time.sleep(0.5)  # their handlers are in place
        os.kill(os.getpid(), signal.SIGTERM)
        began = time.monotonic()
        assert launch.wait_all(relay.processes, tmp_path, relay) == signal.SIGTERM
    assert time.monotonic() - began < 5
    assert [(tmp_path / f"{index}.txt").read_text() for index in range(2)] == ["TERM\n", "TERM\n"]


def launch_args(tmp_path, epochs: int) -> list[str]:
    train = [arg for arg in tiny_args("textgen", 16, epochs=epochs) if arg != "--quiet"]  # the chief's epoch lines
    return ["launch", "--workers", "2", "--log-dir", str(tmp_path / "logs"), "--", *train,
            "--out", str(tmp_path / "runs")]


def saved_epochs(tmp_path) -> list[int]:
    """The epoch of every training state the workers of a launch keep (chief first)."""
    from seqapp import drafts

    chief = sorted((tmp_path / "runs" / "textgen").glob(".partial-*/training-state.npz"))
    others = sorted((tmp_path / "runs" / ".workers").glob("worker-*/textgen/.partial-*/training-state.npz"))
    return [drafts.read_state_meta(path)["epoch"] for path in chief + others]


@pytest.mark.process
@pytest.mark.parametrize("signum", [2, 15], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_epoch_ends_a_launch_and_keeps_the_last_epoch(tmp_path, signum):
    """A Ctrl-C (SIGINT) or a SIGTERM to the launch in the second epoch: every worker ends within
    5 s, keeping the state of the first epoch, which a resume goes on from."""
    process = start_seqapp(tmp_path, launch_args(tmp_path, 6))
    wait_for_text(process, tmp_path / "stdout.txt", "Epoch 1/6")
    time.sleep(0.3)
    process.send_signal(signum)
    seconds = ended_within(process, 60)
    print(f"signal {signum} mid-epoch to a launch of 2 workers: exit {process.returncode} after {seconds:.2f} s")
    assert process.returncode == 128 + signum and seconds < 5
    assert saved_epochs(tmp_path) == [1, 1]
    assert "resume with: seqapp launch --workers 2 -- train --resume" in (tmp_path / "stderr.txt").read_text()


@pytest.mark.process
def test_a_signal_while_the_workers_write_their_state_lets_them_finish_it(tmp_path):
    """Each worker has a SIGTERM in the middle of writing its first epoch's state: both finish
    the write, then stop, so they keep the same epoch."""
    process = start_seqapp(tmp_path, launch_args(tmp_path, 3), SEQAPP_FAULT="state_write:TERM")
    ended_within(process, 300)
    assert process.returncode == 2  # the launch did not have the signal: to it a worker failed
    assert "of 2 failed (exit 143)" in (tmp_path / "stderr.txt").read_text().strip().splitlines()[-1]
    assert saved_epochs(tmp_path) == [1, 1]
