"""Runs saved by seqapp 0.1.0 keep working, whatever the run format becomes.

``tests/fixtures/runs-0.1.0/`` holds what 0.1.0 (commit f8d00cb) saved: one tiny published
run of each task (``<task>/20261206-*-old/``) and an interrupted textgen training (a hidden
draft, ``textgen/.partial-*``). Each must still be listed, predict (on both engines where it
has LiteRT graphs, with the same answers), evaluate to what 0.1.0 measured, export, serve,
and the draft must resume and publish a run that loads.

Everything runs on copies in a temporary folder (commands may write caches or plots); the
fixture tree is checked unchanged at the end. The commands go through the CLI: in-process
(the ``cli`` fixture) where they can, in real processes (marked ``process``) for the server
and the resumed training.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import hash_tree, serving

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0"
TASKS = ("textgen", "sine", "sentiment", "translate", "tagging")
WITH_LITERT = ("textgen", "sentiment", "translate")  # the runs 0.1.0 saved LiteRT graphs for
UPOS = {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"}
# The test-split figure each task's evaluation must reproduce (what 0.1.0 wrote in metrics.json).
HEADLINE = {"textgen": ("test", "loss"), "sine": ("test", "mse"), "sentiment": ("test", "accuracy"),
            "translate": ("greedy", "chrf"), "tagging": ("test", "accuracy")}


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Iterator[Path]:
    """A copy of the 0.1.0 folder of runs, made once for the module; the original stays unchanged."""
    before = hash_tree(FIXTURE)
    root = tmp_path_factory.mktemp("old") / "runs"
    shutil.copytree(FIXTURE, root)
    yield root
    assert hash_tree(FIXTURE) == before, f"a test changed {FIXTURE}"


def run_of(root: Path, task: str) -> Path:
    """The one run of ``task`` that 0.1.0 published under ``root``."""
    (run,) = sorted((root / task).glob("*-old"))
    return run


def draft_of(root: Path) -> Path:
    (draft,) = sorted((root / "textgen").glob(".partial-*"))
    return draft


def succeeded(result) -> str:
    """The stdout of an in-process command that must have succeeded."""
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.stdout.strip(), result.output
    return result.stdout


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def stored_metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))


# -- listed ---------------------------------------------------------------------------------
def test_old_runs_and_the_draft_are_listed(old, cli):
    listed = succeeded(cli("runs", "--out", old)).splitlines()
    for task in TASKS:
        (line,) = [line for line in listed if str(run_of(old, task)) in line]
        assert line.split()[0] == task and " 1 ep " in line and "test " in line
    records = json.loads(succeeded(cli("runs", "--out", old, "--json")))
    assert sorted(record["task"] for record in records) == sorted(TASKS)
    for record in records:
        assert record["run"] == str(run_of(old, record["task"])) and record["epochs"] == 1
        section, name = HEADLINE[record["task"]]
        saved = stored_metrics(Path(record["run"]))[section][name]
        assert record["headline"] and record["metrics"][section][name] == saved
    drafts = succeeded(cli("runs", "--drafts", "--out", old))
    assert str(draft_of(old)) in drafts and "0 epochs and 3 batches done" in drafts


# -- predict and generate -------------------------------------------------------------------
def predict_json(cli, run: Path, *args: str) -> list[dict]:
    records = json_lines(succeeded(cli("predict", "--run", run, "--json", *args)))
    assert records
    return records


def test_old_textgen_predicts_and_generates_on_both_engines(old, cli):
    run = run_of(old, "textgen")
    greedy = {}
    for engine in ("litert", "tf"):
        text = succeeded(cli("predict", "--run", run, "--engine", engine, "--random-seed", "1", "hello"))
        assert text.startswith("hello") and len(text.rstrip("\n")) >= len("hello") + 300
        greedy[engine] = succeeded(cli("generate", "--run", run, "--engine", engine, "--seed", "hello",
                                       "--length", "40", "--temperature", "0")).rstrip("\n")
    assert greedy["litert"] == greedy["tf"]
    assert greedy["tf"].startswith("hello") and len(greedy["tf"]) == len("hello") + 40


def test_old_sentiment_predicts_the_same_on_both_engines(old, cli):
    run = run_of(old, "sentiment")
    texts = ["what a lovely film", "awful, a waste of time", "zxqv"]
    classes = json.loads((run / "preprocessing.json").read_text(encoding="utf-8"))["classes"]
    answers = {engine: predict_json(cli, run, "--engine", engine, *texts) for engine in ("litert", "tf")}
    for lite, keras in zip(answers["litert"], answers["tf"], strict=True):
        assert lite["label"] == keras["label"] and lite["label"] in classes
        assert set(keras["probabilities"]) == set(classes)
        assert sum(keras["probabilities"].values()) == pytest.approx(1, abs=1e-4)
        assert keras["probability"] == max(keras["probabilities"].values())
        for label in classes:
            assert lite["probabilities"][label] == pytest.approx(keras["probabilities"][label], abs=1e-5)
    assert [answer["text"] for answer in answers["tf"]] == texts


def test_old_translate_predicts_the_same_on_both_engines(old, cli):
    run = run_of(old, "translate")
    texts = ["I am cold.", "Go.", "where is the station?"]
    for beam in ("1", "2"):
        answers = {engine: predict_json(cli, run, "--engine", engine, "--beam", beam, *texts)
                   for engine in ("litert", "tf")}
        for lite, keras in zip(answers["litert"], answers["tf"], strict=True):
            assert isinstance(keras["translation"], str) and keras["beam"] == int(beam)
            assert lite["translation"] == keras["translation"]
            assert math.isfinite(keras["log_prob"]) and keras["log_prob"] < 0
            assert lite["log_prob"] == pytest.approx(keras["log_prob"], abs=1e-3)
        assert [answer["source"] for answer in answers["tf"]] == texts


def test_old_sine_forecasts(old, cli):
    (forecast,) = predict_json(cli, run_of(old, "sine"), "--horizon", "5", "--random-seed", "0")
    assert forecast["steps"] == 5 and len(forecast["forecast"]) == 5 and forecast["after"] > 0
    assert all(math.isfinite(value) and abs(value) < 10 for value in forecast["forecast"])


def test_old_tagging_tags_each_token(old, cli):
    run = run_of(old, "tagging")
    tags = set(json.loads((run / "preprocessing.json").read_text(encoding="utf-8"))["tags"])
    assert tags <= UPOS
    (tagged,) = predict_json(cli, run, "The cat sat on the mat.")
    assert tagged["tokens"] == ["The", "cat", "sat", "on", "the", "mat", "."]
    assert len(tagged["tags"]) == len(tagged["tokens"]) and set(tagged["tags"]) <= tags


# -- evaluate -------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_old_runs_evaluate_to_what_they_were_saved_with(old, cli, task):
    run = run_of(old, task)
    text = succeeded(cli("evaluate", "--run", run, "--json"))
    report = json.loads(text[text.index("{"):])
    assert report["task"] == task and report["run"] == str(run)
    section, name = HEADLINE[task]
    # the same model on the same held-out split; a margin for other CPUs' arithmetic (oneDNN, XLA)
    assert report["metrics"][section][name] == pytest.approx(stored_metrics(run)[section][name], rel=1e-3, abs=1e-4)


# -- export ---------------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_old_runs_export(old, cli, tmp_path, task):
    run = run_of(old, task)
    said = succeeded(cli("export", "--to", tmp_path / "models", "--run", run))
    model = tmp_path / "models" / task
    assert f"exported {run} ({task}, saved_model) to {model / '1'}" in said
    assert (model / "1" / "saved_model.pb").stat().st_size > 0 and (model / "1" / "variables").is_dir()
    readme = (model / "README.md").read_text(encoding="utf-8")
    assert task in readme and str(run.name) in readme


# -- serve (a real server) ------------------------------------------------------------------
NUMBERS = ("probability", "probabilities", "log_prob", "forecast")  # compared within 1e-4, the rest exactly
# One request per task, and the CLI arguments that ask the same (``predict --json``).
REQUESTS = {
    "sentiment": ({"inputs": ["what a lovely film", "awful"]}, ["what a lovely film", "awful"]),
    "translate": ({"inputs": ["I am cold.", "Go."]}, ["I am cold.", "Go."]),
    "tagging": ({"inputs": ["The cat sat on the mat."]}, ["The cat sat on the mat."]),
    "sine": ({"options": {"horizon": 5}}, ["--horizon", "5"]),
}


@pytest.mark.process
@pytest.mark.parametrize("task", TASKS)
def test_old_runs_are_served(old, cli, task):
    run = run_of(old, task)
    with serving(run) as server:
        if task == "textgen":
            status, text = server.call("/generate", {"seed": "hello", "options": {"length": 40, "temperature": 0}})
            expected = succeeded(cli("generate", "--run", run, "--seed", "hello", "--length", "40",
                                     "--temperature", "0"))
            assert status == 200 and text.decode().splitlines() == expected.splitlines()
            assert text.startswith(b"hello") and len(text.decode().rstrip("\n")) == len("hello") + 40
        else:
            body, args = REQUESTS[task]
            status, text = server.call("/predict", body)
            outputs = json.loads(text)["outputs"]
            expected = predict_json(cli, run, *args)
            assert status == 200 and len(outputs) == len(expected)
            for output, record in zip(outputs, expected):
                assert output.keys() == record.keys()
                for key, value in record.items():
                    assert output[key] == (pytest.approx(value, abs=1e-4) if key in NUMBERS else value), key
    code, log = server.stop()
    assert code == 0, log


# -- resume (a real training) ---------------------------------------------------------------
@pytest.mark.process
def test_the_old_draft_resumes_and_publishes_a_run(tmp_path, cli):
    root = tmp_path / "runs"
    shutil.copytree(FIXTURE, root)
    draft = draft_of(root)
    done = subprocess.run([sys.executable, "-m", "seqapp", "train", "--resume", str(draft), "--out", str(root)],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"resuming textgen in {draft} at epoch 1, batch 4" in done.stdout
    published = Path(done.stdout.split("saved run ")[1].split()[0])
    assert published.parent == root / "textgen" and not draft.exists()
    assert (published / "model.keras").stat().st_size > 0
    metrics = json.loads((published / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["epochs_trained"] == 2 and math.isfinite(metrics["test"]["loss"])

    # The published run loads: it evaluates to what it saved, generates, and is listed.
    text = succeeded(cli("evaluate", "--run", published, "--json"))
    assert json.loads(text[text.index("{"):])["metrics"]["test"]["loss"] == pytest.approx(
        metrics["test"]["loss"], rel=1e-3)
    assert succeeded(cli("generate", "--run", published, "--engine", "tf", "--seed", "hello",
                         "--length", "20")).startswith("hello")
    listed = json.loads(succeeded(cli("runs", "--out", root, "--json")))
    assert sorted(record["run"] for record in listed if record["task"] == "textgen") == sorted(
        [str(run_of(root, "textgen")), str(published)])
    # Its first epoch is the one 0.1.0 trained without a break (the same settings but the epoch count).
    resumed_epochs = list(csv.DictReader((published / "history.csv").open(encoding="utf-8")))
    (old_epoch,) = csv.DictReader((run_of(root, "textgen") / "history.csv").open(encoding="utf-8"))
    assert len(resumed_epochs) == 2
    for name in ("loss", "val_loss"):
        assert float(resumed_epochs[0][name]) == pytest.approx(float(old_epoch[name]), rel=1e-3), name
