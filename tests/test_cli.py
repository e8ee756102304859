"""The command line, driven in-process through Typer's CliRunner."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TINY_SET = ["model.units=16", "model.embedding_dim=8", "data.seq_len=20"]
TINY = [arg for setting in TINY_SET for arg in ("--set", setting)] + ["--epochs", "2", "-q"]
NO_XLA = ["--set", "train.jit_compile=false"]  # compiling the XLA step took most of a tiny training


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny textgen run shared by the tests of this module."""
    from typer.testing import CliRunner

    from seqapp.cli import app

    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text("ANNA:\nhello there, the boat is blue.\n\nBEN:\nhello anna.\n\n" * 40, encoding="utf-8")
    runs = root / "runs"
    result = CliRunner().invoke(app, ["train", "textgen", "--data", str(corpus), "--out", str(runs), *TINY, *NO_XLA])
    assert result.exit_code == 0, result.output
    return runs, corpus


def error_line(result) -> str:
    """The single stderr line of a failed command (asserting exit code 2 and no traceback)."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.process
def test_help_and_tasks_do_not_import_tensorflow():
    code = ("import sys\nfrom seqapp.cli import app\n"
            "for args in (['--help'], ['tasks'], ['train', '--help']):\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            "print('TF' if 'tensorflow' in sys.modules else 'NO-TF')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().endswith("NO-TF"), out.stdout + out.stderr


def test_version(cli):
    from seqapp import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"seqapp {__version__}"


def test_tasks_lists_every_template(cli):
    from seqapp import config

    result = cli("tasks")
    assert result.exit_code == 0
    for name in config.templates():
        assert any(line.startswith(name + " ") for line in result.stdout.splitlines())


def test_train_prints_and_saves_a_complete_run(trained):
    runs, _ = trained
    (run,) = list((runs / "textgen").iterdir())
    for name in ("model.keras", "preprocessing.json", "config.yaml", "metrics.json", "history.csv",
                 "plots/learning_curves.png"):
        assert (run / name).exists(), name
    assert "model.units: 16" not in (run / "config.yaml").read_text()
    assert "units: 16" in (run / "config.yaml").read_text()


def test_generate_starts_with_seed_and_streams_length(cli, trained):
    runs, _ = trained
    result = cli("generate", "--seed", "hello", "--length", "30", "--out", runs, "--random-seed", "4")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("hello")
    assert len(result.stdout.rstrip("\n")) >= len("hello") + 25


def test_generate_is_reproducible_with_random_seed(cli, trained):
    runs, _ = trained
    args = ("generate", "--seed", "the", "-n", "60", "--out", runs, "--top-k", "5", "--top-p", "0.95")
    first = cli(*args, "--random-seed", "7").stdout
    assert first == cli(*args, "--random-seed", "7").stdout
    assert first != cli(*args, "--random-seed", "8").stdout


def test_generate_num_samples(cli, trained):
    runs, _ = trained
    result = cli("generate", "--seed", "BEN:", "-n", "20", "--num-samples", "3", "--out", runs, "--random-seed", "1")
    assert result.exit_code == 0
    assert result.stdout.count("--- sample") == 3


def test_generate_warns_about_unseen_seed_characters(cli, trained):
    runs, _ = trained
    result = cli("generate", "--seed", "héllo ☃", "-n", "10", "--out", runs)
    assert result.exit_code == 0
    assert "warning:" in result.stderr and "'é'" in result.stderr
    assert result.stdout.startswith("héllo ☃")


def test_evaluate_and_runs_json(cli, trained):
    runs, _ = trained
    result = cli("evaluate", "--out", runs, "--json")
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)["metrics"]
    assert {"val", "test", "baseline_unigram", "tokens"} <= set(metrics)
    assert metrics["test"]["perplexity"] > 1
    text = cli("evaluate", "--out", runs).stdout
    assert "bits_per_char" in text and "baseline_unigram" in text
    rows = json.loads(cli("runs", "--out", runs, "--json").stdout)
    assert rows[0]["task"] == "textgen" and rows[0]["headline"].startswith("test loss")
    assert "textgen" in cli("runs", "--out", runs).stdout


def test_predict_on_textgen_run_continues_each_input(cli, trained):
    runs, _ = trained
    result = cli("predict", "hello", "BEN", "--out", runs, "--random-seed", "2")
    assert result.exit_code == 0
    assert result.stdout.startswith("hello")


def test_failed_training_keeps_earlier_runs(cli, trained, monkeypatch):
    runs, corpus = trained
    before = sorted(p.name for p in (runs / "textgen").iterdir())
    import seqapp.training

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seqapp.training, "fit", explode)
    result = cli("train", "textgen", "--data", corpus, "--out", runs, *TINY, *NO_XLA)
    assert result.exit_code == 130
    assert sorted(p.name for p in (runs / "textgen").iterdir()) == before


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "textgen", "--data", "{tmp}/missing.txt"], "does not exist"),
        (["train", "textgen", "--data", "{tmp}/empty.txt"], "is empty"),
        (["train", "textgen", "--data", "{tmp}/binary.bin"], "looks binary"),
        (["train", "textgen", "--data", "{tmp}"], "is a folder"),
        (["train", "sentimnet"], "unknown task or template 'sentimnet'"),
        (["train", "{tmp}/bad.yaml"], "unknown key 'model.unitz'"),
        (["train", "{tmp}/nope.yaml"], "does not exist"),
        (["train", "textgen", "--set", "model.units"], "bad --set"),
        (["train", "textgen", "--set", "model.units=abc"], "expected an integer"),
        (["train", "textgen", "--set", "train.learning_rate=-1"], "out of range"),
        (["train", "textgen", "--set", "train.learning_rate=nan"], "not a finite number"),
        (["train", "textgen", "--set", "model.dropout=.nan"], "not a finite number"),
        (["train", "textgen", "--set", "train.clipnorm=.inf"], "not a finite number"),
        (["train", "textgen", "--name", "../../x"], "--name '../../x'"),
        (["train", "textgen", "--name", "a/b"], "--name 'a/b'"),
        (["generate", "--temperature", "inf", "--out", "{tmp}/runs"], "--temperature"),
        (["generate", "--temperature", "-0.5", "--out", "{tmp}/runs"], "--temperature"),
        (["generate", "--top-p", "1.5", "--out", "{tmp}/runs"], "--top-p"),
        (["generate", "--top-p", "0", "--out", "{tmp}/runs"], "--top-p"),
        (["generate", "--out", "{tmp}/none"], "no textgen run found"),
        (["evaluate", "--out", "{tmp}/none"], "no run found"),
        (["evaluate", "--run", "{tmp}"], "is not a seqapp run"),
        (["runs", "--task", "textgne"], "unknown task 'textgne'"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(cli, tmp_path, args, fragment):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "binary.bin").write_bytes(b"\x00\x01\x02PNG" * 10)
    (tmp_path / "bad.yaml").write_text("task: textgen\nmodel:\n  unitz: 3\n")
    result = cli(*[arg.format(tmp=tmp_path) for arg in args])
    line = error_line(result)
    assert line.startswith("error: ") and fragment in line


def test_option_of_another_task_is_refused(cli, trained):
    runs, _ = trained
    line = error_line(cli("predict", "hi", "--beam", "3", "--out", runs))
    assert "--beam does not apply to a textgen run" in line


def test_data_folder_is_left_to_the_task(cli, tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    rows = [f"{word} film, really {word}\t{label}" for word, label in
            [("great", 1), ("awful", 0), ("lovely", 1), ("boring", 0)] * 10]
    (folder / "a.txt").write_text("\n".join(rows[:20]) + "\n")
    (folder / "b.txt").write_text("\n".join(rows[20:]) + "\n")
    result = cli("train", "sentiment", "--data", folder, "--out", tmp_path / "runs", "--epochs", "1", "-q",
                 "--set", "model.units=4", "--set", "model.embedding_dim=4", "--set", "train.litert=false")
    assert result.exit_code == 0, result.output
    metrics = json.loads(cli("evaluate", "--out", tmp_path / "runs", "--json").stdout)["metrics"]
    assert sum(metrics["examples"].values()) == 40
    line = error_line(cli("train", "textgen", "--data", folder, "--out", tmp_path / "runs"))
    assert "is a folder" in line


def test_jit_compile_setting_reaches_the_model(monkeypatch, tmp_path):
    import seqapp.training
    from seqapp.tasks import load_config

    seen = []
    original = seqapp.training.fit

    class Trained(Exception):
        """Raised once fit is done: evaluating would only compile more XLA graphs."""

    def spy(model, *args, **kwargs):
        original(model, *args, **kwargs)
        seen.append(model.jit_compile)
        raise Trained

    monkeypatch.setattr(seqapp.training, "fit", spy)
    for setting in (True, False):
        cfg = load_config("textgen", TINY_SET,  # two batches and no validation: the setting is what counts
                          {"data.text": "the boat is blue. " * 60, "data.val_fraction": 0.0, "data.test_fraction": 0.0,
                           "train.epochs": 1, "train.jit_compile": setting})
        with pytest.raises(Trained):
            seqapp.training.train(cfg, tmp_path, verbose=0, log=lambda _: None)
    assert seen == [True, False]


def test_cli_knows_no_task_by_name():
    """Adding a task needs no edit in cli.py: it names no task and imports no task module."""
    from pathlib import Path

    import seqapp.cli
    from seqapp.tasks import REGISTRY

    source = Path(seqapp.cli.__file__).read_text(encoding="utf-8")
    for name in REGISTRY:
        assert name not in source, f"cli.py mentions the task {name!r}"
    assert "seqapp.tasks." not in source


def test_predict_options_are_read_from_the_tasks(monkeypatch):
    from seqapp import cli
    from seqapp.tasks import REGISTRY
    from seqapp.tasks.base import PredictOption, Task

    class Counting(Task):
        name = "counting"
        predict_options = (PredictOption("max_count", int, "Count at most this far."),)

    monkeypatch.setitem(REGISTRY, "counting", Counting)
    params = {param.name: param for param in cli.task_option_parameters()}
    option_info = params["max_count"].annotation.__metadata__[0]
    assert "--max-count" in (option_info.default, *option_info.param_decls)
    assert "(counting runs)" in option_info.help
    assert "horizon" in params and "beam" in params  # the built-in tasks' options are there too

    class Clashing(Task):
        name = "clashing"
        predict_options = (PredictOption("max_count", str, "A name this time."),)

    monkeypatch.setitem(REGISTRY, "clashing", Clashing)
    with pytest.raises(TypeError, match="max_count"):
        cli.task_option_parameters()

