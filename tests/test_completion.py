"""Shell completion: ``seqapp --install-completion`` / ``--show-completion``, and what the shell
is offered for template names, run folders and folders of runs."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from seqapp import completion, config
from seqapp.cli import app


def fake_run(out: Path, task: str, name: str, age_s: float) -> Path:
    """A folder with a run's required files (all that completion looks at), written ``age_s`` ago."""
    folder = out / task / name
    folder.mkdir(parents=True)
    for required in ("model.keras", "preprocessing.json", "config.yaml"):
        (folder / required).write_text("{}")
    stamp = time.time() - age_s
    os.utime(folder / "model.keras", (stamp, stamp))
    return folder


def completions(*words: str, env: dict | None = None) -> list[str]:
    """What bash is offered for the last of ``words`` (the command line so far), run in-process."""
    result = CliRunner().invoke(app, [], prog_name="seqapp", env={
        "_SEQAPP_COMPLETE": "complete_bash", "COMP_WORDS": " ".join(["seqapp", *words]),
        "COMP_CWORD": str(len(words)), **(env or {})})
    assert result.exit_code == 0, result.output
    return result.stdout.splitlines()


def test_template_names_complete_with_their_descriptions():
    found = dict(completion.templates("textgen"))
    assert set(found) == {name for name in config.templates() if name.startswith("textgen")}
    assert "textgen" in found and "textgen-words" in found
    assert "language model" in found["textgen"] and "\n" not in found["textgen"]
    assert completion.templates("zzz") == []
    assert {name for name, _ in completion.templates("")} == set(config.templates())


def test_a_template_path_completes_to_yaml_files_and_folders(tmp_path):
    (tmp_path / "mine.yaml").write_text("task: textgen\n")
    (tmp_path / "mind.txt").write_text("")
    (tmp_path / "minutes").mkdir()
    (tmp_path / ".minor.yaml").write_text("")
    found = [path for path, _ in completion.templates(f"{tmp_path}/min")]
    assert found == [f"{tmp_path}/mine.yaml", f"{tmp_path}/minutes/"]


def test_run_folders_complete_under_the_out_given_newest_first(tmp_path, monkeypatch):
    out = tmp_path / "runs"
    older = fake_run(out, "textgen", "20261101-100000", age_s=100)
    newer = fake_run(out, "sentiment", "20261102-100000", age_s=10)
    (out / "textgen" / ".draft-20261103-100000").mkdir()  # a draft is no run
    context = SimpleNamespace(params={"out": out})
    assert completion.run_folders(context, "") == [str(newer), str(older)]
    assert completion.run_folders(context, str(out / "textgen")) == [str(older)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SEQAPP_RUNS", raising=False)
    assert completion.run_folders(SimpleNamespace(params={}), "runs/sent") == ["runs/sentiment/20261102-100000"]
    assert completion.run_folders(SimpleNamespace(params={"out": tmp_path / "none"}), "") == []


def test_folders_complete_for_out(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs-old").mkdir()
    (tmp_path / "runs.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    assert completion.folders("ru") == ["runs", "runs-old"]
    assert completion.folders(f"{tmp_path}/runs-") == [f"{tmp_path}/runs-old"]
    assert completion.folders("nowhere/x") == []


def test_the_shell_is_offered_templates_and_runs(tmp_path):
    assert "textgen-words" in completions("train", "textgen-")
    assert "textgen-words" in completions("config", "show", "textgen-")
    run = fake_run(tmp_path, "textgen", "20261101-100000", age_s=0)
    assert completions("generate", "--out", str(tmp_path), "--run", "") == [str(run)]
    assert completions("evaluate", "--run", "", env={"SEQAPP_RUNS": str(tmp_path)}) == [str(run)]
    assert completions("predict", "--out", str(tmp_path / "text")) == [str(tmp_path / "textgen")]


@pytest.fixture
def named_shell(monkeypatch):
    """``--show-completion SHELL`` and ``--install-completion SHELL`` take the shell's name (Typer's
    switch), rather than detecting the shell this test runs in."""
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")


def test_completion_can_be_shown_and_installed(tmp_path, named_shell):
    runner = CliRunner()
    shown = runner.invoke(app, ["--show-completion", "bash"], prog_name="seqapp")
    assert shown.exit_code == 0 and "_SEQAPP_COMPLETE=complete_bash" in shown.stdout
    assert "--install-completion" in runner.invoke(app, ["--help"], prog_name="seqapp").stdout
    installed = runner.invoke(app, ["--install-completion", "bash"], prog_name="seqapp", env={"HOME": str(tmp_path)})
    assert installed.exit_code == 0, installed.output
    assert "completion installed" in installed.stdout
    assert (tmp_path / ".bash_completions" / "seqapp.sh").is_file()
    assert "seqapp.sh" in (tmp_path / ".bashrc").read_text()


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_get_their_scripts(shell, named_shell):
    shown = CliRunner().invoke(app, ["--show-completion", shell], prog_name="seqapp")
    assert shown.exit_code == 0 and f"complete_{shell}" in shown.stdout
