"""Drafts (issue 27): an edited config is refused, a damaged draft never blocks a healthy one,
``--clean-drafts`` deletes only what it is given, and ``seqapp launch -- train --resume`` takes
only the drafts of one launch.

Almost everything here builds drafts directly (:func:`seqapp.drafts.start` and a saved
training state) and stops before TensorFlow trains: ``train --resume`` checks a draft before
it starts. One test interrupts a real tiny training to see that its state records the settings.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import hash_tree, tiny_config

from seqapp import checkpoint, drafts, faults, launch, training
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY

OLD_DRAFTS = Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0" / "textgen"


def error_line(result) -> str:
    """The one ``error:`` line of a command that failed with exit 2."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


SAVED = itertools.count(1)


def interrupted_draft(out: Path, cfg, epoch: int = 1, state: bool = True) -> Path:
    """A draft as a training of ``cfg`` interrupted after ``epoch`` epochs leaves it (the state without
    arrays), saved later than every draft made before it (a file's time can be coarser than a test)."""
    draft = drafts.start(out, cfg, None)
    if state:
        checkpoint.save(draft.path, checkpoint.State(epoch=epoch, settings=checkpoint.recorded_settings(draft.path)))
    draft.unlock()
    saved_later(draft.path)
    return draft.path


def saved_later(path: Path) -> None:
    """Date ``path``'s state (or the folder) after every one dated before."""
    stamp = 1_000_000_000 * (1_000_000 + next(SAVED))
    os.utime(path / drafts.STATE_FILE if (path / drafts.STATE_FILE).exists() else path, ns=(stamp, stamp))


def edit_config(draft: Path, section: str, key: str, value) -> None:
    raw = yaml.safe_load((draft / "config.yaml").read_text(encoding="utf-8"))
    raw[section][key] = value
    (draft / "config.yaml").write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")


# -- an edited config.yaml -------------------------------------------------------------------
@pytest.mark.parametrize("task", sorted(REGISTRY))
def test_an_unedited_draft_of_every_task_opens(tmp_path, task):
    path = interrupted_draft(tmp_path, tiny_config(task))
    drafts.open_draft(path).unlock()


@pytest.mark.parametrize("with_state", [True, False], ids=["state", "no-state"])
def test_an_edited_config_is_refused_saying_which_settings_differ(tmp_path, corpus, cli, with_state):
    cfg = tiny_config("textgen", data_file=corpus)
    path = interrupted_draft(tmp_path / "runs", cfg, state=with_state)
    rate = cfg.train.learning_rate
    edit_config(path, "train", "learning_rate", rate * 10)
    before = hash_tree(path)
    line = error_line(cli("train", "--resume", path))
    assert line == (f"error: {path / 'config.yaml'} was edited after this training began (train.learning_rate: "
                    f"{json.dumps(rate)} -> {json.dumps(rate * 10)}); a resumed training goes on with the settings "
                    "it began with: restore them in that file, or start a new training with the new ones: "
                    f"seqapp train {path / 'config.yaml'}")
    assert hash_tree(path) == before  # nothing changed, nothing removed
    edit_config(path, "train", "learning_rate", rate)  # restored: it resumes
    drafts.open_draft(path).unlock()
    edit_config(path, "model", "units", cfg.model.units + 1)
    with pytest.raises(SeqappError, match=f"model.units: {cfg.model.units} -> {cfg.model.units + 1}"):
        drafts.open_draft(path)


def test_an_edited_description_or_layout_is_no_edit(tmp_path):
    path = interrupted_draft(tmp_path, tiny_config("sine"))
    raw = yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8"))
    raw["description"] = "my notes"
    (path / "config.yaml").write_text("# a comment\n" + yaml.safe_dump(raw, sort_keys=True), encoding="utf-8")
    drafts.open_draft(path).unlock()


def test_an_old_draft_without_a_fingerprint_still_resumes_when_edited(tmp_path):
    (old,) = OLD_DRAFTS.glob(".partial-*")
    copy = tmp_path / "textgen" / old.name
    shutil.copytree(old, copy)
    edit_config(copy, "train", "learning_rate", 0.5)
    drafts.open_draft(copy).unlock()


def test_an_interrupted_training_records_its_settings_in_the_state(tmp_path, corpus, monkeypatch):
    cfg = tiny_config("textgen", "train.jit_compile=false", "train.litert=false", "train.checkpoint_every=2",
                      data_file=corpus)
    monkeypatch.setenv("SEQAPP_FAULT", "batch@3:INT")
    faults._passes.clear()
    with pytest.raises(drafts.Interrupted) as stopped:
        training.train(cfg, tmp_path, verbose=0, log=lambda _: None)
    monkeypatch.delenv("SEQAPP_FAULT")
    path = stopped.value.draft
    meta = drafts.read_state_meta(path / drafts.STATE_FILE)
    assert meta["step"] == 3 and meta["settings"] == drafts.settings_of(cfg)
    (path / drafts.INFO_FILE).write_text("{}", encoding="utf-8")  # the state alone is enough to see an edit
    edit_config(path, "train", "batch_size", cfg.train.batch_size * 2)
    with pytest.raises(SeqappError, match=f"train.batch_size: {cfg.train.batch_size} -> {cfg.train.batch_size * 2}"):
        training.resume(path, tmp_path, verbose=0, log=lambda _: None)
    assert path.is_dir() and drafts.read_state_meta(path / drafts.STATE_FILE) == meta


# -- a damaged draft -------------------------------------------------------------------------
@pytest.fixture
def good_and_damaged(tmp_path):
    """``runs`` holding a healthy draft and, saved later, a damaged one (its state cut short)."""
    out = tmp_path / "runs"
    good = interrupted_draft(out, tiny_config("sine"))
    damaged = interrupted_draft(out, tiny_config("sine"), epoch=2)
    state = damaged / drafts.STATE_FILE
    state.write_bytes(state.read_bytes()[:100])
    saved_later(damaged)
    return out, good, damaged


def test_resume_skips_a_damaged_newest_draft_with_a_warning(good_and_damaged, cli, monkeypatch):
    out, good, damaged = good_and_damaged
    resumed = []

    def fake_resume(path, out, verbose=None):
        resumed.append(path)
        return SimpleNamespace(path=out / "sine" / "done", task="sine", metrics={})

    monkeypatch.setattr(training, "resume", fake_resume)
    result = cli("train", "--resume", "--out", out)
    assert result.exit_code == 0, result.output
    assert resumed == [good]
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warning.startswith(f"warning: skipping the damaged draft {damaged} (training-state.npz cannot be read")
    assert warning.endswith(f"remove it with 'seqapp runs --clean-drafts {damaged}'")
    line = error_line(cli("train", "--resume", damaged))
    assert line.startswith(f"error: {damaged} cannot be resumed: training-state.npz cannot be read")
    assert line.endswith(f"; remove it with 'seqapp runs --clean-drafts {damaged}'")
    shutil.rmtree(good)
    line = error_line(cli("train", "--resume", "--out", out))
    assert line == (f"error: no interrupted training in {out} that can be resumed (1 damaged, skipped); "
                    "start one with 'seqapp train TASK'")


def test_a_damaged_draft_is_listed_as_such(good_and_damaged, cli):
    out, good, damaged = good_and_damaged
    listed = cli("runs", "--drafts", "--out", out)
    assert listed.exit_code == 0, listed.output
    lines = {line.split()[1]: line for line in listed.stdout.splitlines()}
    assert "1 epochs done" in lines[str(good)]
    assert "cannot be resumed: damaged, training-state.npz cannot be read" in lines[str(damaged)]
    rows = {row["draft"]: row for row in json.loads(cli("runs", "--drafts", "--out", out, "--json").stdout)}
    assert rows[str(damaged)]["damaged"] and not rows[str(good)]["damaged"]


def test_clean_drafts_deletes_only_what_it_is_given(good_and_damaged, cli, tmp_path):
    out, good, damaged = good_and_damaged
    run = out / "sine" / "20261206-230602-old"  # a published run: never a draft to delete
    run.mkdir()
    before = hash_tree(out)
    line = error_line(cli("runs", "--clean-drafts", "--out", out))
    assert line == ("error: --clean-drafts deletes only the drafts it is given: name them (seqapp runs "
                    "--clean-drafts DRAFT..., see 'seqapp runs --drafts'), or add --damaged for those that cannot "
                    "be resumed")
    assert error_line(cli("runs", "--clean-drafts", good, run)) == (
        f"error: {run} is not a draft (a .partial-* folder that 'seqapp runs --drafts' lists); --clean-drafts "
        "deletes drafts only, never a run")
    assert "does not exist" in error_line(cli("runs", "--clean-drafts", good, tmp_path / "missing"))
    assert "goes with --clean-drafts" in error_line(cli("runs", "--damaged", "--out", out))
    assert hash_tree(out) == before  # every refusal came before any deletion

    cleaned = cli("runs", "--clean-drafts", "--damaged", "--out", out)
    assert cleaned.exit_code == 0, cleaned.output
    assert cleaned.stdout.startswith(f"removed {damaged} (training-state.npz cannot be read")
    assert good.is_dir() and run.is_dir() and not damaged.exists()
    assert cli("runs", "--clean-drafts", "--damaged", "--out", out).stdout == f"no damaged drafts in {out}\n"
    cleaned = cli("runs", "--clean-drafts", good)
    assert cleaned.stdout == f"removed {good}\n" and not good.exists() and run.is_dir()


# -- seqapp launch -- train --resume -----------------------------------------------------------
def started_by(out: Path, monkeypatch, launch_id: str | None, workers: int = 2) -> dict[int, Path]:
    """The drafts a launch of ``workers`` workers (``launch_id``; None: a plain training) leaves when killed."""
    paths = {}
    for index in range(workers):
        if launch_id is None:
            monkeypatch.delenv("TF_CONFIG", raising=False)
            monkeypatch.delenv(drafts.LAUNCH_ENV, raising=False)
        else:
            monkeypatch.setenv("TF_CONFIG", launch.tf_configs(list(range(9000, 9000 + workers)))[index])
            monkeypatch.setenv(drafts.LAUNCH_ENV, launch_id)
        home = drafts.worker_home(out, index) if index else out
        paths[index] = interrupted_draft(home, tiny_config("sine"))
        if launch_id is None:
            break
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv(drafts.LAUNCH_ENV, raising=False)
    return paths


def test_launch_resumes_only_the_drafts_of_one_launch(tmp_path, monkeypatch, capsys, cli):
    out = tmp_path / "runs"
    killed = started_by(out, monkeypatch, "launch-a")
    newer_single = started_by(out, monkeypatch, None)[0]  # the newest draft, of a plain training
    stale = interrupted_draft(drafts.worker_home(out, 1), tiny_config("sine"))  # worker 1's newest backup
    info = json.loads((killed[1] / drafts.INFO_FILE).read_text(encoding="utf-8"))
    assert (info["launch"], info["workers"]) == ("launch-a", 2)

    command = ["train", "--resume", "-q", "--out", str(out)]
    assert launch.resume_choice(command, 2) == ["train", str(killed[0]), *command[1:]]
    assert capsys.readouterr().err == (f"resuming {killed[0]}: the interrupted training begun by a launch of 2 "
                                       "workers, with every worker's backup; 1 other draft(s) there are not: see "
                                       "'seqapp runs --drafts'\n")
    assert drafts.newest(out) == newer_single  # what a bare --resume took before
    assert drafts.newest(drafts.worker_home(out, 1)) == stale  # what worker 1 took before
    with pytest.raises(SeqappError, match="was begun by a single process, so worker 1 has no backup of it"):
        drafts.worker_backup(out, 1, newer_single)
    for other in (["train", "--resume", str(killed[0])], ["train", "sine"], ["runs"]):
        assert launch.resume_choice(other, 2) == other  # a named draft, or no --resume: as given

    resumed = []  # worker 1 of the resumed launch goes on from its backup of that launch, not the newest
    monkeypatch.setattr(training, "resume", lambda path, out, verbose=None: resumed.append(path) or SimpleNamespace(
        path=path, task="sine", metrics={}))
    monkeypatch.setenv("TF_CONFIG", launch.tf_configs([9100, 9101])[1])
    result = cli("train", str(killed[0]), "--resume", "-q", "--out", out)
    assert result.exit_code == 0, result.output
    assert resumed == [killed[1]]


def test_launch_resume_says_why_when_none_or_several_launches_fit(tmp_path, monkeypatch, cli):
    out = tmp_path / "runs"
    single = started_by(out, monkeypatch, None)[0]
    line = error_line(cli("launch", "--workers", "2", "--", "train", "--resume", "--out", out))
    assert line == (f"error: no interrupted training of a launch of 2 workers in {out} to resume ({single}: not "
                    "begun by 'seqapp launch' (or begun by seqapp 0.2 or older)); name a draft to resume it anyway: "
                    "seqapp launch --workers 2 -- train --resume DRAFT")
    first = started_by(out, monkeypatch, "launch-a")
    shutil.rmtree(first[1])  # its worker's backup is gone
    assert f"{first[0]}: worker 1's backup of it is missing" in error_line(
        cli("launch", "--workers", "2", "--", "train", "--resume", "--out", out))
    assert f"{first[0]}: begun by a launch of 2 workers" in error_line(
        cli("launch", "--workers", "3", "--", "train", "--resume", "--out", out))
    second, third = started_by(out, monkeypatch, "launch-b"), started_by(out, monkeypatch, "launch-c")
    line = error_line(cli("launch", "--workers", "2", "--", "train", "--resume", "--out", out))
    assert line == (f"error: 2 interrupted launches of 2 workers could be resumed in {out} ({third[0]}, "
                    f"{second[0]}); name one: seqapp launch --workers 2 -- train --resume DRAFT (remove the other "
                    "with 'seqapp runs --clean-drafts DRAFT')")
