"""``seqapp tune``: specs checked before TensorFlow, trials that are ordinary runs, and a search
that survives Ctrl-C and SIGKILL without training a finished trial again.

The searches train the sentiment task's tiny settings for one epoch without the LiteRT
conversion: a few seconds a trial.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import answers_without_tensorflow

from seqapp import drafts, faults, runs, tune
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, load_config, load_run

TINY = [*REGISTRY["sentiment"].tiny["set"], "train.litert=false", "train.checkpoint_every=2"]  # model.units=8


def tiny_args(*extra: str, out: str | Path = "runs") -> list[str]:
    """``seqapp tune sentiment`` with the tiny settings, one epoch, three trials over model.units."""
    return ["tune", "sentiment", *(arg for item in TINY for arg in ("--set", item)), "--epochs", "1",
            "--trials", "3", "--search", "model.units=4,8,12", "--out", str(out), *extra]


def spaces_of(*texts: str, template: str = "sentiment") -> tuple[list[tune.Space], list[str]]:
    settings = {"template": template, "overrides": TINY, "data": None, "epochs": None, "random_seed": None}
    return tune.check_spaces(list(texts), tune.planner(settings))


def test_lists_and_ranges_are_typed_by_the_setting_they_search():
    spaces, notes = spaces_of("model.units=4,8,16", "model.layers=1..3", "model.dropout=0..0.5",
                              "train.learning_rate=1e-4..1e-2:log", "model.cell=lstm,gru",
                              "model.bidirectional=true,false")
    units, layers, dropout, rate, cell, bidirectional = spaces
    assert units.values == (4, 8, 16) and notes == []
    assert (layers.low, layers.high, layers.log) == (1, 3, False) and isinstance(layers.low, int)
    assert (dropout.low, dropout.high) == (0.0, 0.5) and isinstance(dropout.low, float)
    assert (rate.low, rate.high, rate.log) == (1e-4, 1e-2, True)
    assert cell.values == ("lstm", "gru") and bidirectional.values == (True, False)
    assert bidirectional.cast(1) is True and bidirectional.cast(0) is False  # KerasTuner's true and false
    assert type(units.cast(np.int64(8))) is int and type(dropout.cast(np.float64(0.25))) is float


def test_the_templates_own_value_joins_a_list_that_lacks_it():
    (units,), notes = spaces_of("model.units=16,4")  # the tiny template has 8
    assert units.values == (4, 8, 16)
    assert notes == ["note: the template's model.units=8 is not in the list; trial 0 tries it, and so may other "
                     "trials"]


BAD = [
    (["--search", "model.units"], "bad --search 'model.units'; use --search section.key=SPEC"),
    (["--search", "model.units="], "bad --search 'model.units='"),
    (["--search", "units=4,8"], "bad --search 'units=4,8'"),
    (["--search", "modle.units=4,8"], "unknown section 'modle'"),
    (["--search", "model.unitz=4,8"], "--search model.unitz=4,8: unknown key 'model.unitz'"),
    (["--search", "model.units=4,abc"], "model.units='abc' has the wrong type; expected an integer"),
    (["--search", "model.units=4..8.5"], "model.units=8.5 has the wrong type; expected an integer"),
    (["--search", "model.units=0,8"], "model.units=0 is out of range"),
    (["--search", "model.dropout=0.2..1.0"], "model.dropout=1.0 is out of range"),
    (["--search", "model.units=8..8"], "the range 8..8 is empty"),
    (["--search", "model.units=16..4"], "the range 16..4 is empty"),
    (["--search", "model.dropout=0..0.5:log"], "a log range must lie above zero, and 0.0..0.5 does not"),
    (["--search", "model.dropout=0.1..0.5:lg"], "unknown scale ':lg'"),
    (["--search", "model.dropout=0.1..0.3..0.5"], "a range is low..high"),
    (["--search", "model.cell=gru..lstm"], "model.cell is not a number setting, so it has no range"),
    (["--search", "model.units=8"], "one value is no search"),
    (["--search", "model.units=4,,8"], "an empty item in the list"),
    (["--search", "model.units=4,4"], "4 is listed twice"),
    (["--search", "model.units=4,8", "--search", "model.units=16,32"], "model.units is searched twice"),
    ([], "nothing to search"),
    (["--search", "model.units=4,8", "--objective", "val_f1"], "--objective 'val_f1' is not known"),
    (["--search", "model.units=4,8", "--method", "grid"], "--method 'grid' is not known"),
    (["--search", "model.units=4,8", "--trials", "1"], "--trials 1 is out of range"),
    (["--search", "model.units=4,8", "--max-minutes", "0"], "--max-minutes 0.0 is no time budget"),
    (["--search", "model.units=4,8", "--data", "missing.tsv"], "missing.tsv"),
]
BAD_TEMPLATE = [
    (["tune", "textgen", "--search", "model.units=4,8", "--objective", "val_accuracy"],
     "textgen runs have no validation accuracy; use --objective val_loss"),
    (["tune", "sentiment", "--search", "train.clipnorm=0.5..2:log", "--set", "train.clipnorm=0"],
     "the template's train.clipnorm=0.0 lies outside a log range"),
    (["tune", "sentiment", "--search", "data.max_vocab=100,200", "--set", "data.max_vocab=null"],
     "the template's data.max_vocab is null"),
    (["tune", "--search", "model.units=4,8"], "no template given"),
    (["tune", "--resume"], "no unfinished search in"),
    (["tune", "--resume", "--search", "model.units=4,8"], "--resume goes on with the search's saved settings; "
                                                          "drop --search"),
]


def bad_commands(tmp_path: Path) -> list[tuple[list[str], str]]:
    base = ["tune", "sentiment", *(arg for item in TINY for arg in ("--set", item)), "--out", str(tmp_path / "runs")]
    return [([*base, *args], fragment) for args, fragment in BAD] + [
        ([*args, "--out", str(tmp_path / "runs")], fragment) for args, fragment in BAD_TEMPLATE]


def test_bad_specs_and_options_are_one_line_and_write_nothing(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args, fragment in bad_commands(tmp_path):
        result = cli(*args)
        lines = result.stderr.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, (args, result.stderr)
        assert lines[0].startswith("error: ") and fragment in lines[0], (args, lines[0])
        assert not (tmp_path / "runs").exists(), args


def test_a_missing_extra_is_named_with_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "sklearn" else real(name, *a))
    tune.check_method("random")
    with pytest.raises(SeqappError, match=r"--method bayesian needs scikit-learn; .*pip install 'seqapp\[tune\]'"):
        tune.check_method("bayesian")


@pytest.mark.process  # trains three runs: about 20 s on a quiet machine
def test_a_search_on_a_budget_interrupted_and_resumed_trains_each_trial_once(cli, tmp_path, monkeypatch, tree_hash):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "runs"
    first = cli(*tiny_args("--max-minutes", "0.001", "--objective", "val_accuracy"))  # trial 0, then the budget
    assert first.exit_code == 0, first.stderr
    (search_dir,) = (out / "sentiment").glob("tune-*")
    assert "trial 0/2: model.units=8 (the template's own settings)" in first.stderr
    assert "time budget of 0.001 min reached after 1 trials" in first.stderr
    (trial0,) = runs.run_dirs(out)
    assert trial0.name.endswith(f"-{search_dir.name}-trial0")
    assert load_run(trial0).config.to_dict() == load_config(
        "sentiment", TINY, {"train.epochs": 1}).to_dict()  # the template's own settings, exactly
    before = tree_hash(trial0)

    monkeypatch.setenv("SEQAPP_FAULT", "batch@5:INT")  # Ctrl-C in trial 1's only epoch (13 batches)
    faults._passes.clear()
    stopped = cli("tune", "--resume", "--max-minutes", "60", "--out", "runs")
    monkeypatch.delenv("SEQAPP_FAULT")
    assert stopped.exit_code == 130, stopped.stderr
    assert f"interrupted; the search is saved. resume with: seqapp tune --resume {search_dir.relative_to(tmp_path)}" \
        in stopped.stderr
    (draft,) = drafts.find(out, "sentiment")

    resumed = cli("tune", "--resume", str(search_dir))
    assert resumed.exit_code == 0, resumed.stderr
    assert f"trial 1/2: resuming its interrupted training in {draft}" in resumed.stderr
    assert "trial 0/2" not in resumed.stderr and drafts.find(out, "sentiment") == []
    found = runs.run_dirs(out)
    assert len(found) == 3 and tree_hash(trial0) == before
    listed = cli("runs", "--out", "runs")
    assert all(str(path.relative_to(tmp_path)) in listed.stdout for path in found)

    saved = tune.open_search(search_dir)
    saved.unlock()
    assert saved.status == "done" and sorted(saved.trials) == ["0", "1", "2"]
    for record in saved.trials.values():  # each run trained exactly with its trial's values
        run = load_run(saved.run_path(record))
        assert run.config.model.units == record["values"]["model.units"]
        assert run.metrics["val"]["accuracy"] == pytest.approx(record["objective"])
    assert sorted(record["values"]["model.units"] for record in saved.trials.values()) == [4, 8, 12]
    table = resumed.stdout.splitlines()
    assert table[0].split() == ["trial", "model.units", "val_accuracy", "time", "run"]
    assert [line.split()[0] for line in table[1:4]] == ["0", "1", "2"]
    best = tune.best_record(saved)
    assert f"best run: {saved.run_path(best)}" in resumed.stdout
    predicted = cli("predict", "--run", saved.run_path(best), "works great, love it")
    assert predicted.exit_code == 0 and predicted.stdout.split()[0] in ("positive", "negative")

    again = cli("tune", "--resume", str(search_dir))
    assert again.exit_code == 2 and "is finished (3 trials); to go on, give more" in again.stderr


# -- real processes --------------------------------------------------------------------------------
def seqapp(*args: object, cwd: Path, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("SEQAPP_FAULT", None)
    if fault:
        env["SEQAPP_FAULT"] = fault
    return subprocess.run([sys.executable, "-m", "seqapp", *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.process
def test_bad_specs_answer_before_tensorflow_is_imported(tmp_path):
    commands = bad_commands(tmp_path)
    answers = answers_without_tensorflow([args for args, _ in commands], tmp_path)
    for (args, fragment), answer in zip(commands, answers, strict=True):
        assert "was imported" not in answer and fragment in answer and "exit 2" in answer, (args, answer)
    assert not (tmp_path / "runs").exists()


@pytest.mark.process
@pytest.mark.parametrize("fault, says", [
    ("batch@18:KILL", "trial 1/2: resuming its interrupted training in"),  # trial 1's 5th batch: its state of batch 4
    ("publish@2:KILL", "trial 1/2: its run was saved before the interruption"),  # trial 1 published, not recorded
])
def test_a_killed_search_goes_on_without_training_a_finished_trial_again(tmp_path, tree_hash, fault, says):
    killed = seqapp(*tiny_args(), cwd=tmp_path, fault=fault)
    assert killed.returncode == -9, killed.stderr
    (trial0,) = [path for path in runs.run_dirs(tmp_path / "runs") if path.name.endswith("-trial0")]
    before = tree_hash(trial0)
    resumed = seqapp("tune", "--resume", "--out", "runs", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert says in resumed.stderr and "trial 0/2" not in resumed.stderr
    assert "Traceback" not in resumed.stderr
    found = runs.run_dirs(tmp_path / "runs")
    assert len(found) == 3 and tree_hash(trial0) == before and drafts.find(tmp_path / "runs") == []
    assert [line.split()[0] for line in resumed.stdout.splitlines()[1:4]] == ["0", "1", "2"]
