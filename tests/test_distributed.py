"""Multi-worker training (``train.distribute``, ``seqapp launch``).

The fast tests check the strategy choice, TF_CONFIG parsing and how a launch fails; the
slow one trains the tiny textgen with two local workers and checks it against one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

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


def test_a_failing_worker_stops_the_others(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    failing = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = time.monotonic()
    with pytest.raises(SeqappError, match=r"worker 1 of 2 failed \(exit 3\); see .*worker-1.log"):
        launch.wait_all([sleeper, failing], tmp_path)
    assert sleeper.poll() is not None and time.monotonic() - started < 30


def test_launch_fails_in_one_line_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(tmp_path),
                             "--", "train", "no-such-task"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: worker ") and "failed (exit 2)" in last


def tiny_args(batch_size: int) -> list[str]:
    from seqapp.tasks import REGISTRY

    sets = [item for item in REGISTRY["textgen"].tiny["set"] if not item.startswith("train.batch_size")]
    sets += [f"train.batch_size={batch_size}", "train.clipnorm=0"]  # see the README on clipnorm
    return ["train", "textgen", "--epochs", "2", "--quiet", *[arg for item in sets for arg in ("--set", item)]]


@pytest.mark.slow
def test_two_workers_train_like_one_process_with_the_global_batch(tmp_path):
    env = {**os.environ, "SEQAPP_WEIGHTS_DIGEST": str(tmp_path / "two")}
    (tmp_path / "two").mkdir()
    (tmp_path / "one").mkdir()
    launcher = [sys.executable, "-m", "seqapp", "launch", "--workers", "2", "--log-dir", str(tmp_path / "logs")]
    two = subprocess.run([*launcher, "--", *tiny_args(16), "--out", str(tmp_path / "runs2")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-2000:]
    published = list((tmp_path / "runs2" / "textgen").iterdir())
    assert len(published) == 1 and not published[0].name.startswith(".")
    info = json.loads((published[0] / "distribute.json").read_text())
    assert info == {"strategy": "multi_worker", "workers": 2, "replicas": 2, "batch_size_per_replica": 16,
                    "global_batch_size": 32}
    chief, other = (json.loads((tmp_path / "two" / f"worker-{i}.json").read_text()) for i in (0, 1))
    assert chief["sha256"] == other["sha256"]

    env["SEQAPP_WEIGHTS_DIGEST"] = str(tmp_path / "one")
    one = subprocess.run([sys.executable, "-m", "seqapp", *tiny_args(32), "--set", "train.distribute=none",
                          "--out", str(tmp_path / "runs1")], env=env, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    single = json.loads((tmp_path / "one" / "worker-0.json").read_text())
    for key in ("loss", "val_loss"):
        assert chief["history"][key] == pytest.approx(single["history"][key], abs=1e-4)


def test_mirrored_trains_with_fit_and_records_the_strategy(tmp_path):
    """One replica on a CPU: the strategy's scope, fit and the record, without a cluster."""
    from seqapp.tasks import REGISTRY, load_config
    from seqapp.training import train

    cfg = load_config("textgen", [*REGISTRY["textgen"].tiny["set"], "train.distribute=mirrored"], {"train.epochs": 1})
    run = train(cfg, tmp_path, verbose=0, log=lambda _: None)
    info = json.loads((run.path / "distribute.json").read_text())
    assert info["strategy"] == "mirrored" and info["global_batch_size"] == 16 * info["replicas"]
    assert run.metrics["epochs_trained"] == 1


def test_a_multi_worker_training_is_not_resumed_but_told_how(monkeypatch):
    from seqapp import training
    from seqapp.tasks import load_config

    monkeypatch.setattr(distribute, "plan", lambda mode: distribute.Plan("multi_worker", None, 2, 0))
    with pytest.raises(SeqappError, match="resume it in one process"):
        training.resumable_plan(load_config("textgen"))
