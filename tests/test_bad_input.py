"""Every wrong input, over all commands and tasks: one line, exit 2, nothing saved changed.

Each case runs the CLI against a runs folder holding real (tiny) runs and checks that the
command exits 2 with a single ``error: what is wrong; how to fix it`` line, no traceback,
and that not one byte under the runs folder changed. Checks that need no TensorFlow are
also run in a fresh process where importing TensorFlow fails: they must answer before it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import answers_without_tensorflow, copy_run

from seqapp import drafts
from seqapp.tasks import load_config


def damaged_copy(run: Path, into: Path, name: str) -> Path:
    copy = into / name
    shutil.copytree(run, copy)
    return copy


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs):
    """A runs folder with a tiny textgen, sentiment and sine run (copies of the session's),
    plus damaged copies and bad files."""
    root = tmp_path_factory.mktemp("bad")
    out, bad = root / "runs", root / "damaged"
    bad.mkdir()
    trained = {name: copy_run(tiny_runs(name), out).path for name in ("textgen", "sentiment", "sine")}
    text, senti = trained["textgen"], trained["sentiment"]
    (damaged_copy(text, bad, "truncated") / "model.keras").write_bytes((text / "model.keras").read_bytes()[:500])
    (damaged_copy(text, bad, "garbage") / "model.keras").write_bytes(b"not a zip file at all")
    lambda_model(damaged_copy(text, bad, "lambda") / "model.keras")
    shutil.copy(text / "config.yaml", damaged_copy(senti, bad, "foreign") / "config.yaml")
    (damaged_copy(senti, bad, "badprep") / "preprocessing.json").write_text("{oops")
    (damaged_copy(senti, bad, "listprep") / "preprocessing.json").write_text("[1, 2]")
    (damaged_copy(senti, bad, "badyaml") / "config.yaml").write_text("task: [sentiment\n")
    (damaged_copy(senti, bad, "unknowntask") / "config.yaml").write_text("task: sentimental\n")
    (damaged_copy(senti, bad, "nanmetrics") / "metrics.json").write_text("{not json")
    (damaged_copy(senti, bad, "emptyprep") / "preprocessing.json").write_text("{}")  # valid JSON, wrong shape
    (damaged_copy(text, bad, "emptytextprep") / "preprocessing.json").write_text("{}")
    retyped = damaged_copy(senti, bad, "textmaxlen") / "preprocessing.json"
    retyped.write_text(retyped.read_text().replace('"max_len": ', '"max_len": "sixteen", "was": ', 1))
    (damaged_copy(senti, bad, "shapemetrics") / "metrics.json").write_text('{"test": 5}')
    write_bad_files(root)
    return root


def lambda_model(path: Path) -> None:
    """A .keras file whose model holds a Lambda layer (Python code, refused in safe mode)."""
    import keras

    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)


def write_bad_files(root: Path) -> None:
    files = root / "files"
    files.mkdir()
    (files / "empty.txt").write_text(" \n\n")
    (files / "binary.bin").write_bytes(b"\x00\x01PNG" * 50)
    (files / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    (files / "one-label.tsv").write_text("".join(f"text number {i}\tpos\n" for i in range(30)))
    (files / "header-only.csv").write_text("text,label\n")
    (files / "numbers.csv").write_text("value\nabc\nxyz\n")
    (files / "one-column.tsv").write_text("just english\nno french\n")
    (files / "tagging.tsv").write_text("word\nanother\n")
    (files / "unknown-key.yaml").write_text("task: textgen\nmodel:\n  unitz: 3\n")
    (files / "not-a-mapping.yaml").write_text("- a\n- b\n")
    (files / "broken.yaml").write_text("task: textgen\nmodel: [units\n")
    (files / "no-task.yaml").write_text("model:\n  units: 3\n")
    (files / "bomb.yaml").write_text(alias_bomb())
    (files / "huge.yaml").write_text("task: textgen\ndescription: " + "x" * 3_000_000 + "\n")
    (files / "a-file").write_text("I am a file, not a folder\n")
    os.mkfifo(files / "fifo")
    os.symlink(files / "loop-b", files / "loop-a")
    os.symlink(files / "loop-a", files / "loop-b")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(files / "socket"))
    server.close()  # the socket file stays
    (files / "folder").mkdir()
    for served, mark in (("served-litert", "model.tflite"), ("served-saved-model", "saved_model.pb")):
        (files / served / "sentiment" / "1").mkdir(parents=True)  # a version folder of one format
        (files / served / "sentiment" / "1" / mark).write_bytes(b"stand-in")


def alias_bomb() -> str:
    """A 'billion laughs' YAML: nine levels of ten aliases each (10^9 leaves once expanded)."""
    lines = ["task: textgen", 'a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    return "\n".join(lines + ["description: *a9"]) + "\n"


# (arguments, a fragment of the error line, answered before TensorFlow starts?)
# {out}: the good runs ({sine}, {senti}: two of them), {bad}: damaged runs, {files}: bad files,
# {tmp}: a scratch folder.
CASES = [
    # train: task, template and settings
    (["train"], "name a task or template", True),
    (["train", "textgne"], "did you mean textgen", True),
    (["train", "{files}/nope.yaml"], "does not exist", True),
    (["train", "{files}/unknown-key.yaml"], "unknown key 'model.unitz'", True),
    (["train", "{files}/not-a-mapping.yaml"], "is not a YAML mapping", True),
    (["train", "{files}/broken.yaml"], "is not valid YAML", True),
    (["train", "{files}/no-task.yaml"], "task", True),
    (["train", "{files}/bomb.yaml"], "alias", True),
    (["train", "{files}/huge.yaml"], "MiB", True),
    (["train", "textgen", "--set", "model.units"], "bad --set", True),
    (["train", "textgen", "--set", "model.units=abc"], "expected an integer", True),
    (["train", "textgen", "--set", "model.units=0"], "out of range", True),
    (["train", "textgen", "--set", "model.units=100000000"], "out of range", True),
    (["train", "textgen", "--set", "model.layers=1000"], "out of range", True),
    (["train", "textgen", "--set", "model.cell=transformer"], "transformer", True),
    (["train", "textgen", "--set", "nosuch.key=1"], "nosuch", True),
    (["train", "textgen", "--set", "train.learning_rate=nan"], "not a finite number", True),
    (["train", "textgen", "--set", "train.learning_rate=.inf"], "not a finite number", True),
    (["train", "textgen", "--set", "model.dropout=.nan"], "not a finite number", True),
    (["train", "textgen", "--set", "model.dropout=1"], "out of range", True),
    (["train", "textgen", "--set", "train.batch_size=0"], "out of range", True),
    (["train", "textgen", "--set", "train.checkpoint_every=-1"], "out of range", True),
    (["train", "textgen", "--set", "train.lr_schedule=linear"], "linear", True),
    (["train", "textgen", "--epochs", "0"], "out of range", True),
    (["train", "sine", "--set", "data.val_fraction=0.7"], "out of range", True),
    (["train", "translate", "--set", "model.attention=dot"], "dot", True),
    (["train", "textgen", "--name", "../../x"], "--name '../../x'", True),
    (["train", "textgen", "--name", "a/b"], "--name 'a/b'", True),
    (["train", "textgen", "--name", ".hidden"], "--name '.hidden'", True),
    # train: data files
    (["train", "textgen", "--data", "{files}/missing.txt"], "does not exist", True),
    (["train", "textgen", "--data", "{files}/empty.txt"], "is empty", True),
    (["train", "textgen", "--data", "{files}/binary.bin"], "looks binary", True),
    (["train", "textgen", "--data", "{files}/latin1.txt"], "not UTF-8", True),
    (["train", "textgen", "--data", "{files}/folder"], "is a folder", False),  # a folder is each task's to judge
    (["train", "textgen", "--data", "/dev/zero"], "/dev/zero", True),
    (["train", "textgen", "--data", "{files}/fifo"], "fifo", True),
    (["train", "textgen", "--data", "{files}/loop-a"], "loop", True),
    (["train", "textgen", "--data", "{files}/socket"], "socket", True),
    (["train", "sentiment", "--data", "{files}/header-only.csv"], "header", False),
    (["train", "sentiment", "--data", "{files}/one-label.tsv"], "a single label", False),
    (["train", "sine", "--data", "{files}/numbers.csv"], "numbers.csv", False),
    (["train", "translate", "--data", "{files}/one-column.tsv"], "one-column.tsv", False),
    (["train", "tagging", "--data", "{files}/tagging.tsv"], "tagging.tsv", False),
    (["train", "textgen", "--out", "{files}/a-file"], "choose a writable folder with --out", True),
    (["train", "textgen", "--out", "/proc/seqapp-runs"], "choose a writable folder with --out", True),
    # train --resume
    (["train", "--resume", "--out", "{tmp}/none"], "no interrupted training", True),
    (["train", "--resume", "{files}/missing-draft"], "does not exist", True),
    (["train", "--resume", "{out}/sine"], "not a resumable training", True),
    (["train", "--resume", "--epochs", "3", "--out", "{tmp}/none"], "drop --epochs", True),
    (["train", "--resume", "--set", "model.units=3"], "drop --set", True),
    # generate
    (["generate", "--temperature", "-1", "--out", "{out}"], "--temperature", True),
    (["generate", "--temperature", "inf", "--out", "{out}"], "--temperature", True),
    (["generate", "--temperature", "nan", "--out", "{out}"], "--temperature", True),
    (["generate", "--temperature", "1e39", "--out", "{out}"], "--temperature 1e+39 is outside", True),
    (["generate", "--temperature", "1e-46", "--out", "{out}"], "--temperature 1e-46 is outside", True),
    (["generate", "--top-k", "0", "--out", "{out}"], "--top-k", True),
    (["generate", "--top-p", "0", "--out", "{out}"], "--top-p", True),
    (["generate", "--top-p", "1.5", "--out", "{out}"], "--top-p", True),
    (["generate", "--num-samples", "0", "--out", "{out}"], "--num-samples", True),
    (["generate", "--length", "-1", "--out", "{out}"], "--length", True),
    (["generate", "--out", "{tmp}/none"], "no textgen run found", True),
    (["generate", "--run", "{files}/missing-run"], "does not exist", True),
    (["generate", "--run", "{sine}"], "is a sine run", True),
    (["generate", "--run", "{bad}/truncated", "--engine", "tf"], "cannot be loaded as a Keras model", False),
    (["generate", "--run", "{bad}/garbage", "--engine", "tf"], "cannot be loaded as a Keras model", False),
    (["generate", "--run", "{bad}/lambda", "--engine", "tf"], "Lambda layer", False),
    # predict
    (["predict", "--out", "{tmp}/none"], "no run found", True),
    (["predict", "--run", "{senti}"], "no texts to classify", True),
    (["predict", "3", "--run", "{sine}"], "takes no inputs", True),
    (["predict", "--horizon", "0", "--run", "{sine}"], "--horizon", True),
    (["predict", "hi", "--beam", "2", "--run", "{senti}"], "--beam does not apply", True),
    (["predict", "hi", "--file", "{files}/missing.txt", "--run", "{senti}"], "does not exist", True),
    (["predict", "hi", "--file", "/dev/zero", "--run", "{senti}"], "/dev/zero", True),
    (["predict", "hi", "-o", "{tmp}/no/such/dir/out.txt", "--run", "{senti}"], "does not exist",
     True),
    (["predict", "hi", "--run", "{files}/folder"], "is not a seqapp run", True),
    (["predict", "hi", "--run", "{bad}/foreign"], "is a textgen config but the run holds a sentiment model", True),
    (["predict", "hi", "--run", "{bad}/badprep"], "preprocessing.json cannot be read", True),
    (["predict", "hi", "--run", "{bad}/listprep"], "is not a JSON object", True),
    (["predict", "hi", "--run", "{bad}/badyaml"], "is not valid YAML", True),
    (["predict", "hi", "--run", "{bad}/unknowntask"], "unknown task 'sentimental'", True),
    # a run file that is valid JSON of the wrong shape: one line naming the file and the field, in every command
    (["predict", "hi", "--run", "{bad}/emptyprep"], "preprocessing.json has no field 'tokenizer'", True),
    (["predict", "hi", "--run", "{bad}/textmaxlen"], "preprocessing.json field 'max_len' is the text 'sixteen'",
     True),
    (["generate", "--run", "{bad}/emptytextprep"], "preprocessing.json has no field 'tokenizer'", True),
    (["export", "--run", "{bad}/emptyprep", "--to", "{tmp}/exports"], "preprocessing.json has no field 'tokenizer'",
     True),
    (["serve", "--run", "{bad}/emptyprep", "--port", "0"], "preprocessing.json has no field 'tokenizer'", True),
    (["serve", "--run", "{bad}/shapemetrics", "--port", "0"], "metrics.json field 'test' is the number 5", True),
    (["evaluate", "--run", "{bad}/emptyprep"], "preprocessing.json has no field 'tokenizer'", True),
    # export: where it cannot write, versions TensorFlow Serving cannot load
    (["export", "--run", "{senti}", "--to", "/proc/seqapp-exports"], "choose another --to", True),
    (["export", "--run", "{senti}", "--to", "{files}/loop-a"], "Too many levels of symbolic links", True),
    (["export", "--run", "{senti}", "--to", "{tmp}/" + "x" * 300], "File name too long", True),
    (["export", "--run", "{senti}", "--to", "{files}/a-file"], "is a file, not a folder", True),
    (["export", "--run", "{senti}", "--to", "{tmp}/exports", "--version", str(2**63)], "is too large", True),
    (["export", "--run", "{senti}", "--to", "{tmp}/exports", "--version", "-3"], "must be at least 1", True),
    (["export", "--run", "{senti}", "--to", "{files}/served-litert", "--version", "2"], "holds litert versions (1)",
     True),
    (["export", "--run", "{senti}", "--to", "{files}/served-saved-model", "--format", "litert", "--version", "2"],
     "holds saved_model versions (1)", True),
    # evaluate, runs, config
    (["evaluate", "--out", "{tmp}/none"], "no run found", True),
    (["evaluate", "--run", "{files}/missing-run"], "does not exist", True),
    (["evaluate", "--run", "{bad}/garbage", "--engine", "tf"], "cannot be loaded as a Keras model", False),
    (["evaluate", "--run", "{bad}/truncated", "--json", "--engine", "tf"], "cannot be loaded as a Keras model", False),
    (["evaluate", "--run", "{bad}/lambda", "--engine", "tf"], "Lambda layer", False),
    (["runs", "--task", "textgne", "--out", "{out}"], "unknown task 'textgne'", True),
    (["config", "show", "textgne"], "did you mean textgen", True),
    (["config", "show", "textgen", "--set", "model.units=-1"], "out of range", True),
    (["config", "show", "{files}/bomb.yaml"], "alias", True),
]


def fill(args: list[str], world: Path, tmp: Path) -> list[str]:
    out = world / "runs"
    sine, senti = (next((out / task).glob("2*")) for task in ("sine", "sentiment"))
    return [arg.format(out=out, bad=world / "damaged", files=world / "files", tmp=tmp, sine=sine, senti=senti)
            for arg in args]


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ") and "; " in lines[0], lines[0]
    return lines[0]


def test_there_are_at_least_60_cases():
    assert len(CASES) >= 60


@pytest.mark.parametrize("args, fragment, cheap", CASES, ids=[" ".join(case[0])[:60] for case in CASES])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(cli, world, tmp_path, tree_hash, args, fragment, cheap):
    before = tree_hash(world)
    result = cli(*fill(args, world, tmp_path))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in one_error_line(result.stderr)
    assert tree_hash(world) == before


CHEAP = [case for case in CASES if case[2]]


@pytest.mark.process
def test_cheap_checks_answer_before_tensorflow_is_imported(world, tmp_path):
    """In a process where importing TensorFlow or Keras fails, every cheap case still gets its line."""
    answers = answers_without_tensorflow([fill(args, world, tmp_path) for args, _, _ in CHEAP], tmp_path)
    for (args, fragment, _), answer in zip(CHEAP, answers, strict=True):
        assert "was imported" not in answer, (args, answer)
        assert fragment in answer and "exit 2" in answer, (args, answer)


def test_a_draft_being_trained_cannot_be_resumed_by_another_process(cli, tmp_path):
    draft = drafts.start(tmp_path / "runs", load_config("textgen"), None)
    try:
        result = cli("train", "--resume", draft.path)
        assert result.exit_code == 2 and "being trained by another seqapp process" in one_error_line(result.stderr)
        listed = cli("runs", "--drafts", "--out", tmp_path / "runs")
        assert "training now" in listed.stdout
        cleaned = cli("runs", "--clean-drafts", draft.path)
        assert "being trained by a seqapp process now" in one_error_line(cleaned.stderr) and draft.path.exists()
    finally:
        draft.unlock()
    cleaned = cli("runs", "--clean-drafts", draft.path)
    assert f"removed {draft.path}" in cleaned.stdout and not draft.path.exists()


def test_runs_json_stays_valid_json_when_a_metric_is_nan(cli, world, tmp_path):
    import json

    out = tmp_path / "runs"
    shutil.copytree(world / "runs", out)
    metrics = next((out / "sine").glob("2*")) / "metrics.json"
    metrics.write_text(metrics.read_text().replace("{", '{"broken": NaN, "worse": Infinity, ', 1))
    result = cli("runs", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout, parse_constant=lambda name: pytest.fail(f"{name} in runs --json"))
    sine = next(row for row in rows if row["task"] == "sine")
    assert sine["metrics"]["broken"] is None and sine["metrics"]["worse"] is None


@pytest.mark.process
def test_seqapp_debug_shows_the_traceback(tmp_path):
    env = {**os.environ, "SEQAPP_DEBUG": "1"}
    done = subprocess.run([sys.executable, "-m", "seqapp", "train", "textgne"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback (most recent call last)" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: unknown task")
    plain = subprocess.run([sys.executable, "-m", "seqapp", "train", "textgne"], capture_output=True, text=True,
                           timeout=120)
    assert "Traceback" not in plain.stderr

