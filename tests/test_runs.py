"""Run folders: atomic publishing, finding the latest, refusing foreign folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqapp import checkpoint, drafts, faults, files, runs
from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, find_run, load_config, load_run
from seqapp.tasks import latest_run as latest


def fake_run(out, template: str, stamp_ns: int):
    """A run folder with the files ``runs.load`` needs (the model file is a placeholder)."""
    cfg = load_config(template)
    draft = drafts.start(out, cfg, None)
    with drafts.training(draft):
        (draft.path / "preprocessing.json").write_bytes(next(  # what the task reads: a 0.1.0 run's
            (Path(__file__).parent / "fixtures" / "runs-0.1.0" / cfg.task).glob("*-old/preprocessing.json")
        ).read_bytes())
        (draft.path / "model.keras").write_bytes(b"placeholder")
        final = drafts.publish(draft)
    os.utime(final / "model.keras", ns=(stamp_ns, stamp_ns))
    return final


def test_latest_is_the_newest_of_the_tasks_asked_for(tmp_path):
    old_text = fake_run(tmp_path, "textgen", 1_000)
    new_sine = fake_run(tmp_path, "sine", 3_000)
    new_text = fake_run(tmp_path, "textgen-hello", 2_000)
    assert old_text != new_text and old_text.parent == new_text.parent
    assert latest(tmp_path).path == new_sine
    assert latest(tmp_path, "textgen").path == new_text
    assert latest(tmp_path, ["sentiment", "textgen"]).path == new_text
    with pytest.raises(SeqappError, match="no translate run found"):
        latest(tmp_path, "translate")


def test_find_checks_the_task_of_a_named_run(tmp_path):
    path = fake_run(tmp_path, "sine", 1_000)
    assert find_run(path, tmp_path, ["sine"]).task == "sine"
    with pytest.raises(SeqappError, match="is a sine run; this command needs a textgen run"):
        find_run(path, tmp_path, ["textgen"])


def test_a_failed_draft_leaves_nothing_behind(tmp_path):
    kept = fake_run(tmp_path, "textgen", 1_000)
    with pytest.raises(RuntimeError), drafts.training(drafts.start(tmp_path, load_config("textgen"), None)) as draft:
        (draft.path / "model.keras").write_bytes(b"half")
        raise RuntimeError("killed")
    assert sorted(p.name for p in (tmp_path / "textgen").iterdir()) == [kept.name]


def test_editing_an_old_config_does_not_make_it_the_latest(tmp_path):
    old = fake_run(tmp_path, "textgen", 1_000)
    new = fake_run(tmp_path, "textgen", 2_000)
    (old / "config.yaml").write_text((old / "config.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    assert latest(tmp_path, "textgen").path == new


def test_a_damaged_run_is_skipped_with_a_warning_and_never_breaks_the_others(tmp_path, cli, caplog):
    good = fake_run(tmp_path, "sine", 1_000)
    broken = fake_run(tmp_path, "sine", 2_000)
    (broken / "preprocessing.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(SeqappError, match="preprocessing.json cannot be read"):
        load_run(broken)
    with caplog.at_level("WARNING", logger="seqapp"):
        assert latest(tmp_path, "sine").path == good
    assert any(str(broken) in record.getMessage() for record in caplog.records)
    result = cli("runs", "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    assert [row["run"] for row in json.loads(result.stdout)] == [str(good)]
    assert f"warning: skipping the damaged run {broken}" in result.stderr


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden", "", "x" * 65])
def test_a_run_name_that_is_not_a_plain_folder_name_is_refused(tmp_path, name):
    with pytest.raises(SeqappError, match="--name"):
        files.check_name(name)
    with pytest.raises(SeqappError, match="--name"):
        drafts.start(tmp_path, load_config("textgen"), name)
    assert not (tmp_path / "textgen").exists()
    files.check_name("tiny-1.v2_b")


def finished_draft(out: Path, content: bytes, name: str | None = None) -> drafts.Draft:
    """A draft whose training is over: a run's files and the training state, not yet published."""
    draft = drafts.start(out, load_config("sine"), name)
    files.write_json(draft.path / "preprocessing.json", {})
    (draft.path / "model.keras").write_bytes(content)
    checkpoint.save(draft.path, checkpoint.State(epoch=1, done=True))
    return draft


def test_a_name_taken_while_publishing_keeps_both_runs(tmp_path, monkeypatch):
    """Another training with the same --name publishes in the same second, between the look for a
    free name and the rename: neither run is lost, this one takes the next free name."""
    draft = finished_draft(tmp_path, b"this run", name="same")
    moves, taken = {"rename": os.rename, "replace": os.replace}, []

    def other_run_first(kind: str):
        def move(source, target, *args, **kwargs):
            if Path(source) == draft.path and not taken:
                Path(target).mkdir()
                (Path(target) / "model.keras").write_bytes(b"the other run")
                taken.append(Path(target))
            return moves[kind](source, target, *args, **kwargs)
        return move

    monkeypatch.setattr(os, "rename", other_run_first("rename"))
    monkeypatch.setattr(os, "replace", other_run_first("replace"))
    with drafts.training(draft):
        final = drafts.publish(draft)
    monkeypatch.undo()
    (other,) = taken
    assert final == other.with_name(f"{other.name}-2") and other.name.endswith("-same")
    assert (other / "model.keras").read_bytes() == b"the other run"
    assert (final / "model.keras").read_bytes() == b"this run"
    assert sorted(path.name for path in final.iterdir()) == ["config.yaml", "model.keras", "preprocessing.json",
                                                             "provenance.json"]
    assert drafts.find(tmp_path) == []


def test_a_kill_while_publishing_keeps_the_run(tmp_path, monkeypatch):
    """The ``publish`` fault point comes after the rename, before the training state is deleted."""
    monkeypatch.setenv("SEQAPP_FAULT", "publish:INT")
    faults._passes.clear()
    draft = finished_draft(tmp_path, b"this run")
    with pytest.raises(drafts.Interrupted) as stopped, checkpoint.SignalGuard(), drafts.training(draft):
        drafts.publish(draft)
    run = stopped.value.run
    assert run is not None and stopped.value.draft is None and run.parent == tmp_path / "sine"
    assert (run / "model.keras").read_bytes() == b"this run" and (run / drafts.STATE_FILE).is_file()
    assert drafts.find(tmp_path) == [] and runs.run_dirs(tmp_path) == [run]


@pytest.mark.process
def test_a_training_killed_while_publishing_keeps_its_run(tmp_path, cli):
    sets = [*REGISTRY["sine"].tiny["set"], "train.litert=false"]
    args = ["train", "sine", *(arg for item in sets for arg in ("--set", item)), "--epochs", "1", "-q",
            "--out", "runs"]
    killed = subprocess.run([sys.executable, "-m", "seqapp", *args], cwd=tmp_path, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "SEQAPP_FAULT": "publish:KILL"})
    assert killed.returncode == -9, killed.stderr
    (run,) = runs.run_dirs(tmp_path / "runs", "sine")
    assert drafts.find(tmp_path / "runs") == []
    listed = cli("runs", "--out", tmp_path / "runs", "--json")
    assert [row["run"] for row in json.loads(listed.stdout)] == [str(run)]
    assert load_run(run).model.count_params() > 0
