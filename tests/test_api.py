"""``seqapp.api.load(RUN)``: the run found as the commands find it, answers equal to ``--json``'s
records, the same option checks with the command's message, and an ``import seqapp`` that
loads nothing heavy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import seqapp
from seqapp import api
from seqapp.errors import SeqappError

SENTENCES = ["I am cold.", "where is the station", "a zebra xylophone"]


def cli_records(cli, *args: str) -> list[dict]:
    result = cli(*args)
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()]


def cli_error(cli, *args: str) -> str:
    result = cli(*args)
    assert result.exit_code == 2, result.output
    line, = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line[len("error: "):]


def test_importing_the_api_loads_neither_tensorflow_nor_the_cli():
    script = ("import sys, seqapp; print(sorted(m for m in sys.modules if m.startswith('seqapp.'))); "
              "from seqapp.api import load; print(sorted({m.split('.')[0] for m in sys.modules} & "
              "{'tensorflow', 'keras', 'typer', 'matplotlib'}), 'seqapp.cli' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    package, api_line = done.stdout.strip().splitlines()
    assert package == "['seqapp.errors', 'seqapp.version']", done.stdout + done.stderr  # the package: the base only
    assert api_line == "[] False", done.stdout + done.stderr
    assert seqapp.SeqappError is SeqappError


@pytest.mark.parametrize(("task", "inputs", "options", "flags"), [
    ("sentiment", ["a lovely film", "the battery died after a day", "x " * 300], {}, []),
    ("translate", SENTENCES, {"beam": 2, "n_best": 2}, ["--beam", "2", "--n-best", "2"]),
])
def test_predict_equals_the_records_of_predict_json(tiny_runs, cli, task, inputs, options, flags):
    run = tiny_runs(task).path
    model = api.load(run)
    assert (model.task, model.path, model.engine) == (task, run, "litert")
    assert model.predict(inputs, **options) == cli_records(cli, "predict", "--run", run, "--json", *flags, *inputs)
    assert model.predict(inputs[0], **options) == model.predict(inputs[:1], **options)


def test_generate_equals_the_records_of_generate_json(tiny_runs, cli):
    run = tiny_runs("textgen").path
    model = api.load(run)
    records = model.generate("hello", length=25, num_samples=2, random_seed=3, temperature=0.7)
    assert records == cli_records(cli, "generate", "--run", run, "--seed", "hello", "--length", "25",
                                  "--num-samples", "2", "--random-seed", "3", "-t", "0.7", "--json")
    assert [len(record["generated"]) for record in records] == [25, 25]  # characters: one token each
    assert all(record["text"] == "hello" + record["generated"] for record in records)
    plain = cli("generate", "--run", run, "--seed", "hello", "--length", "25", "--random-seed", "3", "-t", "0.7")
    assert plain.stdout == model.generate("hello", length=25, random_seed=3, temperature=0.7)[0]["text"] + "\n"
    pieces = list(model.stream("hello", length=5, random_seed=3))
    assert pieces[0] == ["hello"] and len(pieces) == 6


def test_a_run_is_found_as_the_commands_find_it(tiny_runs, tmp_path, monkeypatch):
    run = tiny_runs("sentiment").path
    runs_folder = run.parent.parent
    assert api.load(run).path == run  # a run folder
    assert api.load(str(runs_folder)).path == run  # a folder of runs: its latest
    assert api.load(run.parent).path == run  # a task's folder of runs
    assert api.load(runs_folder, task="sentiment").path == run
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SEQAPP_RUNS", str(runs_folder))
    assert api.load().path == run  # as --out: $SEQAPP_RUNS
    with pytest.raises(SeqappError, match="no textgen run found in"):
        api.load(runs_folder, task="textgen")
    with pytest.raises(SeqappError, match="is a sentiment run; this command needs a textgen run"):
        api.load(run, task="textgen")
    with pytest.raises(SeqappError, match="does not exist"):
        api.load(tmp_path / "nowhere")
    with pytest.raises(SeqappError, match="unknown task 'sentimnt'; did you mean sentiment"):
        api.load(runs_folder, task="sentimnt")
    with pytest.raises(SeqappError, match="--engine 'fast' is not known"):
        api.load(run, engine="fast")


def test_bad_options_raise_the_message_of_the_command(tiny_runs, cli):
    sentiment, translate = tiny_runs("sentiment").path, tiny_runs("translate").path
    cases = [
        (sentiment, {"beam": 2}, ["a text"], ["--beam", "2", "a text"]),
        (sentiment, {}, [], []),
        (translate, {"beam": 0}, ["I am cold."], ["--beam", "0", "I am cold."]),
        (translate, {"n_best": 3, "beam": 2}, ["I am cold."], ["--n-best", "3", "--beam", "2", "I am cold."]),
        (translate, {"max_len": 10_000}, ["I am cold."], ["--max-len", "10000", "I am cold."]),
    ]
    for run, options, inputs, flags in cases:
        with pytest.raises(SeqappError) as raised:
            api.load(run).predict(inputs, **options)
        assert str(raised.value) == cli_error(cli, "predict", "--run", run, *flags)
    textgen = api.load(tiny_runs("textgen").path)
    for options, flags in [({"temperature": -1.0}, ["-t", "-1"]), ({"top_p": 1.5}, ["--top-p", "1.5"]),
                           ({"length": -3}, ["--length", "-3"]), ({"stop": ""}, ["--stop", ""]),
                           ({"no_repeat_ngram": 0}, ["--no-repeat-ngram", "0"])]:
        with pytest.raises(SeqappError) as raised:
            textgen.generate("hello", **options)
        assert str(raised.value) == cli_error(cli, "generate", "--run", textgen.path, *flags)


def test_wrong_calls_raise_seqapp_errors_that_say_what_to_do(tiny_runs):
    sentiment = api.load(tiny_runs("sentiment").path)
    textgen = api.load(tiny_runs("textgen").path)
    expected = [
        (lambda: sentiment.generate("hello"), "a sentiment run does not generate text; use .predict"),
        (lambda: textgen.predict(["hello"]), "a textgen run continues seeds; use .generate"),
        (lambda: sentiment.predict(["a"], beem=2), "beem= is not an option of seqapp predict"),
        (lambda: sentiment.predict(["a"], json=True), "always gives the records"),
        (lambda: sentiment.predict(["a", 3]), "input 1 is int; each input must be a text"),
        (lambda: sentiment.predict(b"bytes"), "must be a text or a list of texts, not bytes"),
        (lambda: textgen.generate("hello", length="5"), "--length '5' must be an integer, not str"),
        (lambda: textgen.generate("hello", temperature=True), "--temperature True must be a number"),
        (lambda: textgen.generate(5), "--seed 5 must be a text"),
        (lambda: textgen.generate("hello", stop=[".", 3]), "--stop 3 must be a text"),
    ]
    for call, message in expected:
        with pytest.raises(SeqappError, match=message.replace("(", r"\(").replace(".", r"\.")):
            call()
    translate = api.load(tiny_runs("translate").path)
    with pytest.raises(SeqappError, match="--beam '2' must be an integer"):
        translate.predict(["I am cold."], beam="2")
    assert set(translate.predict_options) >= {"beam", "n_best", "max_len"} and "json" not in translate.predict_options


def test_paths_may_be_given_as_text(tiny_runs, tmp_path):
    model = api.load(tiny_runs("translate").path)
    plot = tmp_path / "attention.png"
    if not model.run.config.model.attention or model.run.config.model.attention == "none":
        pytest.skip("the tiny translate run has no attention")
    model.predict(["I am cold."], attention_plot=str(plot))
    assert plot.stat().st_size > 0


def test_the_tf_engine_answers_the_same(tiny_runs):
    run = tiny_runs("sentiment").path
    fast, keras = api.load(run), api.load(run, engine="tf")
    assert keras.engine == "tf"
    for mine, theirs in zip(fast.predict(SENTENCES), keras.predict(SENTENCES)):
        assert mine["label"] == theirs["label"]
        assert mine["probability"] == pytest.approx(theirs["probability"], abs=1e-4)
    assert isinstance(Path(fast.path), Path) and "sentiment run" in repr(fast)
