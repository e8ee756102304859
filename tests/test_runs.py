"""Run folders: atomic publishing, finding the latest, refusing foreign folders."""

from __future__ import annotations

import json
import os

import pytest

from seqapp import drafts, files
from seqapp.errors import SeqappError
from seqapp.tasks import find_run, load_config, load_run
from seqapp.tasks import latest_run as latest


def fake_run(out, template: str, stamp_ns: int):
    """A run folder with the files ``runs.load`` needs (the model file is a placeholder)."""
    draft = drafts.start(out, load_config(template), None)
    with drafts.training(draft):
        files.write_json(draft.path / "preprocessing.json", {})
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
