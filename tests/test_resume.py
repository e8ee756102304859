"""No training lost: Ctrl-C, SIGTERM, SIGKILL and a full disk, then ``--resume``.

A resumed training must end bit-identical to one that never stopped (weights, metrics,
history), and no earlier run may change. Kills happen at exact moments through fault
points (``SEQAPP_FAULT``, see ``seqapp.faults``), in real ``seqapp`` processes (the
``process`` tests; the SIGKILLed textgen keeps the template's XLA training step). Elsewhere
the textgen runs train without XLA, whose compiling cost most of their time, and none of
them converts to LiteRT, which no resume touches.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_corpus

from seqapp import checkpoint, drafts, faults, runs, training
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, load_config, load_run

# Dropout, early stopping and a cosine schedule: every kind of state a resume must restore.
EXTRA = ["model.dropout=0.2", "train.patience=2", "train.lr_schedule=cosine", "train.epochs=3",
         "train.checkpoint_every=4"]


def quiet(_: str) -> None:
    pass


def tiny_textgen(corpus: Path):
    """The in-process tests' training: compiling the XLA step took most of each run's time."""
    return load_config("textgen", [*REGISTRY["textgen"].tiny["set"], *EXTRA, "train.jit_compile=false",
                                   "train.litert=false"], data_file=corpus)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("resume") / "corpus.txt")


@pytest.fixture(scope="module")
def uninterrupted(corpus_file, tmp_path_factory) -> Path:
    """The run of ``tiny_textgen(corpus_file)`` that never stopped, trained once for the module."""
    return training.train(tiny_textgen(corpus_file), tmp_path_factory.mktemp("uninterrupted"), verbose=0,
                          log=quiet).path


def same_runs(first: Path, second: Path) -> None:
    """Two run folders hold the same weights, metrics and history, bit for bit."""
    one, two = load_run(first).model.get_weights(), load_run(second).model.get_weights()
    assert len(one) == len(two) and all(np.array_equal(a, b) for a, b in zip(one, two))
    for name in ("metrics.json", "history.csv"):
        assert (first / name).read_text() == (second / name).read_text(), name


def only_run(out: Path, task: str) -> Path:
    found = runs.run_dirs(out, task)
    assert len(found) == 1, found
    return found[0]


def test_rerun_and_resume_after_ctrl_c_are_bit_identical(tmp_path, corpus_file, uninterrupted, monkeypatch):
    cfg = tiny_textgen(corpus_file)
    first = uninterrupted
    again = training.train(cfg, tmp_path / "b", verbose=0, log=quiet).path
    same_runs(first, again)

    for spec in ("batch@18:INT",):  # mid-epoch 2 (14 batches an epoch)
        monkeypatch.setenv("SEQAPP_FAULT", spec)
        faults._passes.clear()
        with pytest.raises(drafts.Interrupted) as stopped:
            training.train(cfg, tmp_path / spec, verbose=0, log=quiet)
        assert stopped.value.saved and stopped.value.signum == 2
        state = checkpoint.load(stopped.value.draft)
        assert state.step > 0 and not state.done
        monkeypatch.delenv("SEQAPP_FAULT")
        said = []
        resumed = training.resume(stopped.value.draft, tmp_path / spec, verbose=0, log=said.append)
        assert f"resuming textgen in {stopped.value.draft} at epoch 2, batch {state.step + 1}" in said
        same_runs(first, resumed.path)
        assert not stopped.value.draft.exists()


def test_interrupted_on_an_epochs_last_batch_the_epoch_ends_first(tmp_path, corpus_file, uninterrupted,
                                                                  monkeypatch):
    cfg = tiny_textgen(corpus_file)
    first = uninterrupted
    steps = checkpoint_steps(cfg)
    monkeypatch.setenv("SEQAPP_FAULT", f"batch@{steps}:TERM")
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted) as stopped:
        training.train(cfg, tmp_path / "b", verbose=0, log=quiet)
    state = checkpoint.load(stopped.value.draft)
    assert (state.epoch, state.step, stopped.value.signum) == (1, 0, 15)
    monkeypatch.delenv("SEQAPP_FAULT")
    same_runs(first, training.resume(None, tmp_path / "b", verbose=0, log=quiet).path)


def checkpoint_steps(cfg) -> int:
    """Batches in one epoch of ``cfg``'s training data."""
    return int(training.prepare(cfg).train_ds.cardinality())


def test_a_nan_loss_stops_training_without_saving_a_model(tmp_path):
    cfg = load_config("sine", ["train.learning_rate=10", "train.clipnorm=0", "train.epochs=3"])
    with pytest.raises(SeqappError, match="the training diverged: the loss became nan.*lower train.learning_rate"):
        training.train(cfg, tmp_path, verbose=0, log=quiet)
    assert runs.run_dirs(tmp_path) == []


def test_a_state_that_does_not_fit_the_model_is_refused(tmp_path, corpus, monkeypatch):
    cfg = tiny_textgen(corpus)
    monkeypatch.setenv("SEQAPP_FAULT", "batch@5:INT")
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted) as stopped:
        training.train(cfg, tmp_path, verbose=0, log=quiet)
    monkeypatch.delenv("SEQAPP_FAULT")
    state = checkpoint.load(stopped.value.draft)
    state.arrays["model"] = state.arrays["model"][:-1]
    checkpoint.save(stopped.value.draft, state)
    with pytest.raises(SeqappError, match="does not fit this model") as refused:
        training.resume(stopped.value.draft, tmp_path, verbose=0, log=quiet)
    assert "--resume" not in str(refused.value)  # resuming again would meet the same error
    assert stopped.value.draft.exists()


# -- real processes: kill points, signals, a full disk ---------------------------------------


def seqapp(*args: object, cwd: Path, fault: str | None = None, file_limit: int | None = None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("SEQAPP_FAULT", None)
    if fault:
        env["SEQAPP_FAULT"] = fault

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run([sys.executable, "-m", "seqapp", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600, preexec_fn=limit_file_size if file_limit else None)


def train_args(task: str, extra: list[str], out: str = "runs") -> list[str]:
    """``seqapp train`` of ``task``'s tiny run with EXTRA, without the LiteRT conversion (no resume touches it)."""
    sets = [*REGISTRY[task].tiny["set"], *EXTRA, "train.litert=false", *extra]
    return ["train", task, *(arg for item in sets for arg in ("--set", item)), "-q", "--out", out]


NO_XLA = ["train.jit_compile=false"]  # test_textgen_survives_sigkill_at_every_kind_of_moment keeps XLA


def kill_and_resume(tmp_path: Path, args: list[str], task: str, fault: str) -> Path:
    """Train with ``fault`` (a SIGKILL), resume, and return the published run."""
    killed = seqapp(*args, cwd=tmp_path, fault=fault)
    assert killed.returncode == -9, killed.stderr
    assert len(drafts.find(tmp_path / "runs", task)) == 1
    resumed = seqapp("train", "--resume", "--out", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert drafts.find(tmp_path / "runs", task) == []
    return Path(tmp_path, resumed.stdout.split("saved run ")[1].split()[0])


@pytest.mark.process
def test_textgen_survives_sigkill_at_every_kind_of_moment(tmp_path, corpus, tree_hash):
    args = [*train_args("textgen", []), "--data", corpus]
    baseline = seqapp(*args, cwd=tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    earlier = only_run(tmp_path / "runs", "textgen")
    before = tree_hash(earlier)
    # during an epoch (after the checkpoint at batch 16), inside a state write, during the final save
    for fault in ("batch@18:KILL", "state_write@3:KILL", "final_save:KILL"):
        same_runs(earlier, kill_and_resume(tmp_path, args, "textgen", fault))
    assert tree_hash(earlier) == before


@pytest.mark.process
@pytest.mark.parametrize("task", ["sentiment", "translate"])
def test_other_tasks_survive_sigkill_mid_epoch(tmp_path, task):
    args = train_args(task, ["train.checkpoint_every=2"])
    baseline = seqapp(*args, cwd=tmp_path)
    assert baseline.returncode == 0, baseline.stderr
    earlier = only_run(tmp_path / "runs", task)
    same_runs(earlier, kill_and_resume(tmp_path, args, task, "batch@5:KILL"))


@pytest.mark.process
def test_sigterm_saves_the_state_and_says_how_to_resume(tmp_path, corpus):
    args = [*train_args("textgen", NO_XLA), "--data", corpus]
    stopped = seqapp(*args, cwd=tmp_path, fault="batch@6:TERM")
    assert stopped.returncode == 143, stopped.stderr
    (draft,) = drafts.find(tmp_path / "runs", "textgen")
    assert f"resume with: seqapp train --resume {draft.relative_to(tmp_path)}" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    listed = seqapp("runs", "--drafts", "--out", "runs", cwd=tmp_path)
    assert "0 epochs and 6 batches done" in listed.stdout


@pytest.mark.process
def test_a_full_disk_gives_one_line_and_keeps_the_draft_resumable(tmp_path, corpus):
    args = [*train_args("textgen", NO_XLA), "--data", corpus]
    killed = seqapp(*args, cwd=tmp_path, fault="batch@18:KILL")  # the state of batch 16 is on disk
    assert killed.returncode == -9
    (draft,) = drafts.find(tmp_path / "runs", "textgen")
    state_before = (draft / drafts.STATE_FILE).read_bytes()
    full = seqapp("train", "--resume", "--out", "runs", cwd=tmp_path, file_limit=len(state_before) // 2)
    assert full.returncode == 2, full.stderr
    lines = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "cannot save the training state" in lines[0]
    assert f"seqapp train --resume {draft.relative_to(tmp_path)}" in lines[0]
    assert "Traceback" not in full.stderr
    assert (draft / drafts.STATE_FILE).read_bytes() == state_before
    resumed = seqapp("train", "--resume", str(draft.relative_to(tmp_path)), "--out", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = seqapp(*train_args("textgen", NO_XLA, out="again"), "--data", corpus, cwd=tmp_path)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    same_runs(only_run(tmp_path / "again", "textgen"), only_run(tmp_path / "runs", "textgen"))


@pytest.mark.parametrize("epochs_only, says", [(False, "stopping after this batch to save the training state"),
                                               (True, "saved at epoch ends only")])
def test_the_first_signal_says_where_the_state_will_be_saved(caplog, epochs_only, says):
    import logging
    import signal

    guard = checkpoint.SignalGuard()
    guard.deferring, guard.epochs_only = True, epochs_only
    with caplog.at_level(logging.INFO, logger="seqapp"):
        guard._handle(signal.SIGINT, None)
    assert guard.pending == signal.SIGINT and says in caplog.text
    assert ("epoch ends" in caplog.text) == epochs_only
    with pytest.raises(drafts.Interrupted):  # a second signal stops at once
        guard._handle(signal.SIGINT, None)
