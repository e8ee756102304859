"""``seqapp evaluate --data FILE``, ``--engine``, ``--errors N``; ``seqapp predict --data`` on series runs
and the ``history`` of ``seqapp serve``'s ``/predict``.

A run scored on a file holding its own test split gives the figures plain ``evaluate`` gives for
that split (the run's preprocessing and baseline applied to the new file), for every task; the
LiteRT engine gives the Keras figures; a series forecast from a new history equals the window
model fed its own forecasts by hand. Every bad value is one line, exit 2, nothing changed.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import CORPUS, answers_without_tensorflow, copy_run, serving
from test_bad_input import one_error_line

from seqapp.tasks import get_task, load_run

ENGINE_TASKS = ("textgen", "sentiment", "translate")  # the tasks whose runs have LiteRT graphs


def report(cli, *args) -> dict:
    """``seqapp evaluate ARGS --json``, checked to succeed."""
    result = cli("evaluate", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def close(found, expected, path: str = "") -> None:
    """Equal JSON values, floats to a relative 1e-4 (or 1e-5 absolute: figures are rounded to 5 decimals)."""
    if isinstance(expected, dict):
        assert set(found) == set(expected), path
        for key in expected:
            close(found[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, list):
        assert len(found) == len(expected), path
        for i, (a, b) in enumerate(zip(found, expected)):
            close(a, b, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(found, bool):
        assert found == pytest.approx(expected, rel=1e-4, abs=1e-5), path
    else:
        assert found == expected, path


# -- each task's own test split written as a new file -------------------------------------------
def write_test_split(task: str, run, path: Path) -> Path:
    """The run's own test split, in the format its task reads, at ``path``."""
    test = get_task(task)().load_data(run.config).test
    if task == "textgen":
        text = test
    elif task == "sentiment":
        text = "".join(f"{words}\t{label}\n" for words, label in zip(test.texts, test.labels))
    elif task == "tagging":
        text = "\n".join("".join(f"{token}\t{tag}\n" for token, tag in zip(tokens, tags))
                         for tokens, tags in zip(test.tokens, test.tags))
    else:
        text = "".join(f"{source}\t{target}\n" for source, targets in test for target in targets)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("task", ["textgen", "sentiment", "tagging", "translate"])
def test_a_file_of_the_test_split_scores_as_the_test_split(cli, tiny_runs, tmp_path, tree_hash, task):
    run = tiny_runs(task)
    data = write_test_split(task, run, tmp_path / "new.txt")
    before = tree_hash(run.path)
    own = report(cli, "--run", run.path)["metrics"]
    new = report(cli, "--run", run.path, "--data", data)
    assert tree_hash(run.path) == before  # nothing written into the run (nor by plain evaluate)
    assert new["data"] == str(data) and new["task"] == task
    metrics = new["metrics"]
    if task == "translate":
        assert metrics["split"] == "test" and set(metrics["data"]) == {"test"}
        for key in ("greedy", "beam", "baseline_copy_source", "sentences", "references"):
            close(metrics[key], own[key], key)
        return
    assert "val" not in metrics and "train" not in metrics
    close(metrics["test"], own["test"], "test")
    baseline = {"textgen": "baseline_unigram", "sentiment": "baseline_majority",
                "tagging": "baseline_most_frequent_tag"}[task]
    close(metrics[baseline]["test"], own[baseline]["test"], baseline)  # the baseline, on the new file too
    if task == "tagging":
        close(metrics["baseline_tag_frequencies"]["test"], own["baseline_tag_frequencies"]["test"], "frequencies")
        assert metrics["sentences"] == {"test": own["sentences"]["test"]}
    counts = {"textgen": "tokens", "sentiment": "examples", "tagging": "tokens"}[task]
    assert metrics[counts] == {"test": own[counts]["test"]}


def test_textgen_scores_any_text_with_its_vocabulary(cli, tiny_runs, tmp_path):
    run = tiny_runs("textgen")
    data = tmp_path / "other.txt"
    data.write_text(CORPUS + "zebra ☃ quartz\n", encoding="utf-8")  # characters the vocabulary lacks: <unk>
    metrics = report(cli, "--run", run.path, "--data", data)["metrics"]
    assert metrics["tokens"] == {"test": len(data.read_text(encoding="utf-8"))}
    assert 0 < metrics["test"]["loss"] < metrics["baseline_unigram"]["test"]["loss"] * 3
    shown = cli("evaluate", "--run", run.path, "--data", data)
    assert shown.exit_code == 0 and f"on {data}" in shown.stdout and "baseline_unigram" in shown.stdout


def sine_csv(run, path: Path, rows: int = 60) -> tuple[Path, np.ndarray]:
    """``rows`` values of a sine wave like the run's (a wave it never saw), as a one-column CSV."""
    values = np.sin(2 * np.pi * 0.037 * np.arange(rows) + 0.4) + np.random.default_rng(5).normal(0, 0.1, rows)
    path.write_text("value\n" + "".join(f"{value:.6f}\n" for value in values), encoding="utf-8")
    return path, np.round(values, 6)


def test_sine_scores_a_new_series_against_hand_computed_errors(cli, tiny_runs, tmp_path):
    run = tiny_runs("sine")
    data, values = sine_csv(run, tmp_path / "new.csv")
    metrics = report(cli, "--run", run.path, "--data", data)["metrics"]
    prep = run.preprocessing
    window = prep["window"]
    starts = np.arange(window, len(values))
    x = ((values[starts[:, None] + np.arange(-window, 0)] - prep["mean"]) / prep["std"]).astype(np.float32)
    forecast = run.model.predict(x[..., None], verbose=0)[:, 0] * prep["std"] + prep["mean"]
    truth = values[starts]
    assert metrics["test"]["mse"] == pytest.approx(np.mean((forecast - truth) ** 2), rel=1e-4)
    assert metrics["baseline_last_value"]["test"]["mse"] == pytest.approx(
        np.mean((values[starts - 1] - truth) ** 2), rel=1e-5)
    assert metrics["points"] == {"test": len(values)}
    assert "noise_floor" not in metrics and "noise_realised" not in metrics  # the synthetic data's, not this file's


# -- LiteRT and Keras give the same figures ---------------------------------------------------------
@pytest.mark.parametrize("task", ENGINE_TASKS)
def test_evaluate_on_litert_equals_keras(cli, tiny_runs, task):
    run = tiny_runs(task)
    lite = report(cli, "--run", run.path, "--engine", "litert", "--errors", "3")
    auto = report(cli, "--run", run.path, "--errors", "3")
    keras = report(cli, "--run", run.path, "--engine", "tf", "--errors", "3")
    assert lite["engine"] == auto["engine"] == "litert" and keras["engine"] == "tf"
    close(lite["metrics"], keras["metrics"])
    score = {"translate": "bleu"}.get(task, "loss")  # examples with equal scores may come in either order
    close([record[score] for record in lite["worst"]], [record[score] for record in keras["worst"]])
    assert auto["metrics"] == lite["metrics"]


def test_a_calibrated_run_evaluates_the_same_on_litert(tiny_runs, tmp_path):
    """A temperature lives inside the LiteRT classifier; the logits read back from it give the
    Keras path's calibration figures, before and after the temperature."""
    run = copy_run(tiny_runs("sentiment"), tmp_path)
    prep_file = run.path / "preprocessing.json"
    prep = json.loads(prep_file.read_text(encoding="utf-8"))
    prep_file.write_text(json.dumps({**prep, "calibration": {"temperature": 2.5, "examples": 50}}), encoding="utf-8")
    shutil.rmtree(run.path / "litert")
    run = load_run(run.path)
    task = get_task("sentiment")()
    task.export(run, run.path)
    splits = task.load_data(run.config)
    lite, keras = task.evaluate(run, splits, engine="litert"), task.evaluate(run, splits, engine="tf")
    assert keras["calibration"]["temperature"] == 2.5
    close(lite, keras)


# -- --errors N ---------------------------------------------------------------------------------------
def worst(cli, run, *args) -> tuple[list[dict], str]:
    found = report(cli, "--run", run.path, *args)["worst"]
    text = cli("evaluate", "--run", run.path, *args)
    assert text.exit_code == 0 and "worst-scored examples of the" in text.stdout
    return found, text.stdout


def test_errors_sentiment_lists_the_highest_losses(cli, tiny_runs):
    from seqapp.tasks.sentiment import class_probabilities

    run = tiny_runs("sentiment")
    found, text = worst(cli, run, "--errors", "4")
    test = get_task("sentiment")().load_data(run.config).test
    classes = run.preprocessing["classes"]
    probabilities = class_probabilities(run, test.texts)
    losses = -np.log(probabilities[np.arange(len(test)), [classes.index(label) for label in test.labels]])
    expected = np.sort(losses)[::-1][:4]
    assert [record["loss"] for record in found] == pytest.approx(expected, abs=2e-5)
    assert all(record["text"] in test.texts and record["label"] in classes for record in found)
    assert found[0]["text"] in text


def test_errors_tagging_lists_the_sentences_with_most_wrong_tags(cli, tiny_runs):
    from seqapp.tasks.tagging import predict_tags

    run = tiny_runs("tagging")
    found, _ = worst(cli, run, "--errors", "3", "--engine", "tf")
    test = get_task("tagging")().load_data(run.config).test
    wrong = [sum(a != b for a, b in zip(tags, guess)) for tags, guess in zip(test.tags, predict_tags(run, test.tokens))]
    assert [record["errors"] for record in found] == sorted(wrong, reverse=True)[:3]
    for record in found:
        marked = [item for item in record["tagged"].split(" ") if re.fullmatch(r".+/[^/()]+\([^/()]+\)", item)]
        assert len(marked) == record["errors"]


def test_errors_textgen_translate_and_sine_are_worst_first(cli, tiny_runs):
    textgen, _ = worst(cli, tiny_runs("textgen"), "--errors", "2")
    assert len(textgen) == 2 and textgen[0]["loss"] >= textgen[1]["loss"] and textgen[0]["text"]
    translate, _ = worst(cli, tiny_runs("translate"), "--errors", "100")  # at most every test source
    test = get_task("translate")().load_data(tiny_runs("translate").config).test
    assert len(translate) == len(test)
    assert [(r["bleu"], r["chrf"]) for r in translate] == sorted((r["bleu"], r["chrf"]) for r in translate)
    series, text = worst(cli, tiny_runs("sine"), "--errors", "3")
    assert [r["mse"] for r in series] == sorted((r["mse"] for r in series), reverse=True)
    first = series[0]
    assert first["mse"] == pytest.approx(np.mean((np.asarray(first["forecast"]) - first["truth"]) ** 2), rel=1e-3)
    assert "series" in first and "mse" in text


# -- series: predict --data and serve's history ------------------------------------------------------
def forecast_by_hand(run, history: np.ndarray, steps: int) -> np.ndarray:
    """The window model read over the last window and every forecast so far, from a zero state each
    time: what carrying the recurrent state from step to step computes."""
    prep = run.preprocessing
    sequence = list((history[-prep["window"]:] - prep["mean"]) / prep["std"])
    predicted = []
    while len(predicted) < steps:
        chunk = run.model.predict(np.asarray(sequence, np.float32)[None, :, None], verbose=0)[0]
        predicted.extend(chunk)
        sequence.extend(chunk)
    return np.asarray(predicted[:steps], np.float64) * prep["std"] + prep["mean"]


def forecast_of(cli, run, *args, input: str | None = None) -> list[float]:
    result = cli("predict", "--run", run.path, "--json", *args, input=input)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["forecast"]


def test_predict_data_forecasts_from_the_new_history(cli, tiny_runs, tmp_path):
    run = tiny_runs("sine")
    data, values = sine_csv(run, tmp_path / "history.csv", rows=37)
    found = forecast_of(cli, run, "--data", data, "--horizon", "7")
    np.testing.assert_allclose(found, forecast_by_hand(run, values, 7), rtol=1e-4, atol=1e-5)
    numbers = "".join(data.read_text().splitlines(keepends=True)[1:])  # the same numbers, one per line
    assert forecast_of(cli, run, "--data", "-", "--horizon", "7", input=numbers) == found
    assert forecast_of(cli, run, "--data", "-", "--horizon", "7", input=data.read_text()) == found
    other = forecast_of(cli, run, "--data", "-", "--horizon", "7", input="".join(f"{v + 3}\n" for v in values))
    assert not np.allclose(other, found)  # the history, not the run's own series, is what it forecasts from
    lines = cli("predict", "--run", run.path, "--data", data, "--horizon", "3").stdout.splitlines()
    assert lines[0] == "step,value" and len(lines) == 4


def test_predict_data_keeps_the_runs_column_rules(cli, tiny_runs, tmp_path):
    """A CSV with a date column and several numeric ones: the last numeric column is the history."""
    run = tiny_runs("sine")
    _, values = sine_csv(run, tmp_path / "plain.csv", rows=30)
    data = tmp_path / "dated.csv"
    data.write_text("day,other,value\n" + "".join(f"d{i},{i},{v}\n" for i, v in enumerate(values)))
    found = cli("predict", "--run", run.path, "--json", "--data", data, "--horizon", "2")
    assert found.exit_code == 0, found.output
    record = json.loads(found.stdout)
    assert record["after"] == "d29"
    np.testing.assert_allclose(record["forecast"], forecast_by_hand(run, values, 2), rtol=1e-4, atol=1e-5)


def test_python_api_takes_the_history_file(tiny_runs, tmp_path, cli):
    from seqapp.api import load

    run = tiny_runs("sine")
    data, _ = sine_csv(run, tmp_path / "history.csv", rows=25)
    (record,) = load(run.path).predict(data=str(data), horizon=4)
    assert record["forecast"] == forecast_of(cli, run, "--data", data, "--horizon", "4")


def test_serve_history_values_are_checked():
    pytest.importorskip("fastapi")
    from seqapp.serve_app import ApiError, history_values
    from seqapp.serve_service import MAX_HISTORY

    assert history_values([1, 2.5, -3]) == [1.0, 2.5, -3.0]
    for value, status, fragment in (("1 2 3", 400, "must be a list of numbers"),
                                    ([1, "2"], 400, "history[1] is a text"),
                                    ([1, True], 400, "history[1] is true or false"),
                                    ([10**400], 400, "too large a number"),
                                    ([0.0] * (MAX_HISTORY + 1), 413, f"at most {MAX_HISTORY}")):
        with pytest.raises(ApiError) as caught:
            history_values(value)
        assert caught.value.status == status and fragment in caught.value.message


@pytest.mark.process
def test_serve_forecasts_from_a_history(tiny_runs, tmp_path, cli):
    pytest.importorskip("fastapi")
    run = tiny_runs("sine")
    data, values = sine_csv(run, tmp_path / "history.csv", rows=40)
    expected = forecast_of(cli, run, "--data", data, "--horizon", "6")
    with serving(run.path) as server:
        status, answer = server.json("/predict", {"history": values.tolist(), "options": {"horizon": 6}})
        assert status == 200, answer
        np.testing.assert_allclose(answer["outputs"][0]["forecast"], expected, rtol=1e-6)
        status, answer = server.json("/predict", {"options": {"horizon": 3}})  # no history: the run's own series
        assert status == 200 and len(answer["outputs"][0]["forecast"]) == 3
        status, info = server.json("/info")
        assert info["takes_history"] is True and info["limits"]["max_history"] >= 1000
        for body, code, fragment in (({"history": values[:3].tolist()}, 400, "has 3 value(s)"),
                                     ({"history": "1,2"}, 400, "must be a list of numbers"),
                                     ({"history": values.tolist(), "options": {"horizon": 10**6}}, 400, "at most"),
                                     ({"history": values.tolist(), "options": {"random_seed": 1}}, 400, "choose one"),
                                     ({"history": [1e300] * 40}, 400, "too far from the run's training data")):
            status, answer = server.json("/predict", body)
            assert status == code and fragment in answer["error"], (body, answer)


# -- bad input: one line, exit 2, nothing changed -------------------------------------------------------
# (arguments, a fragment of the error line); {textgen} ... {tagging}: run folders, {bare}: a textgen run
# without LiteRT graphs, {files}: the folder of the bad files written by write_files
CASES = [
    (["evaluate", "--run", "{textgen}", "--errors", "0"], "--errors 0 must be at least 1"),
    (["evaluate", "--run", "{sentiment}", "--errors", "-2"], "--errors -2 must be at least 1"),
    (["evaluate", "--run", "{textgen}", "--engine", "fast"], "--engine 'fast' is not known"),
    (["evaluate", "--run", "{tagging}", "--engine", "litert"], "tagging runs have no LiteRT engine"),
    (["evaluate", "--run", "{sine}", "--engine", "litert"], "sine runs have no LiteRT engine"),
    (["evaluate", "--run", "{bare}", "--engine", "litert"], "has no LiteRT step graph"),
    (["evaluate", "--run", "{textgen}", "--data", "{files}/missing.txt"], "does not exist"),
    (["evaluate", "--run", "{textgen}", "--data", "{files}/empty.txt"], "is empty"),
    (["evaluate", "--run", "{textgen}", "--data", "{files}/binary.txt"], "looks binary"),
    (["evaluate", "--run", "{textgen}", "--data", "{files}"], "is a folder"),
    (["evaluate", "--run", "{textgen}", "--data", "{files}/one.txt"], "has 1 token(s)"),
    (["evaluate", "--run", "{sentiment}", "--data", "{files}/unknown-label.tsv"], "unknown label 'maybe'"),
    (["evaluate", "--run", "{sentiment}", "--data", "{files}/one-column.tsv"], "column(s)"),
    (["evaluate", "--run", "{sentiment}", "--data", "{files}/empty-text.tsv"], "the text is empty"),
    (["evaluate", "--run", "{tagging}", "--data", "{files}/unknown-tag.tsv"], "tag 'WOBBLE' is not one the run"),
    (["evaluate", "--run", "{tagging}", "--data", "{files}/untagged.tsv"], "expected a token and its tag"),
    (["evaluate", "--run", "{translate}", "--data", "{files}/no-tab.tsv"], "is not 'source<TAB>target'"),
    (["evaluate", "--run", "{translate}", "--data", "{files}/long.tsv"], "no pair of"),
    (["evaluate", "--run", "{sine}", "--data", "{files}/short.csv"], "too few for one window"),
    (["evaluate", "--run", "{sine}", "--data", "{files}/words.csv"], "has no numeric column"),
    (["evaluate", "--run", "{sine}", "--data", "{files}/bad-cell.csv"], "is not a number"),
    (["predict", "--run", "{sine}", "--data", "{files}/missing.csv"], "does not exist"),
    (["predict", "--run", "{sine}", "--data", "{files}/short.csv"], "has 5 value(s); the run reads the last"),
    (["predict", "--run", "{sine}", "--data", "{files}/bad-number.txt"], "line 3: 'twelve' is not a finite number"),
    (["predict", "--run", "{sine}", "--data", "{files}/bad-cell.csv"], "is not a number"),
    (["predict", "--run", "{sine}", "--data", "{files}/huge.txt"], "too far from the run's training data"),
    (["predict", "--run", "{sine}", "--data", "{files}/history.txt", "--random-seed", "1"], "choose one"),
    (["predict", "--run", "{sine}", "--data", "{files}/history.txt", "a text"], "takes no inputs; to forecast"),
    (["predict", "--run", "{sine}", "--data", "{files}/history.txt", "--horizon", "0"], "--horizon 0 must be"),
    (["predict", "--run", "{sentiment}", "--data", "{files}/history.txt", "good"], "--data does not apply to a"),
]


def write_files(folder: Path) -> None:
    folder.mkdir(parents=True)
    files = {"empty.txt": "  \n", "one.txt": "a", "unknown-label.tsv": "good film\tpositive\nbad film\tmaybe\n",
             "one-column.tsv": "good film\nbad film\nfine film\n", "empty-text.tsv": "good\tpositive\n \tnegative\n",
             "unknown-tag.tsv": "The\tDET\ncat\tWOBBLE\n", "untagged.tsv": "The\tDET\ncat\n",
             "no-tab.tsv": "I am cold. J'ai froid.\n", "long.tsv": " ".join(["word"] * 40) + "\tmot\n",
             "short.csv": "value\n1\n2\n3\n4\n5\n", "words.csv": "a,b\nx,y\nz,w\n",
             "bad-cell.csv": "value\n" + "1\n" * 20 + "oops\n" + "2\n" * 20,
             "bad-number.txt": "1\n2\ntwelve\n", "huge.txt": "1e300\n" * 30,
             "history.txt": "".join(f"{math.sin(i / 4):.4f}\n" for i in range(30))}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "binary.txt").write_bytes(b"abc\x00def")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_runs) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate-bad")
    runs = {name: copy_run(tiny_runs(name), root / "runs").path
            for name in ("textgen", "sentiment", "tagging", "translate", "sine")}
    bare = root / "bare" / "textgen" / runs["textgen"].name
    shutil.copytree(runs["textgen"], bare)
    shutil.rmtree(bare / "litert")
    write_files(root / "files")
    return {**runs, "bare": bare, "files": root / "files", "root": root}


def filled(args: list[str], world: dict[str, Path]) -> list[str]:
    return [arg.format(**{name: str(path) for name, path in world.items()}) for arg in args]


@pytest.mark.parametrize("args, fragment", CASES, ids=[" ".join(case[0][:1] + case[0][3:])[:60] for case in CASES])
def test_bad_values_are_one_line_exit_2_and_change_nothing(cli, world, tree_hash, args, fragment):
    before = tree_hash(world["root"])
    result = cli(*filled(args, world))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert fragment in one_error_line(result.stderr), result.stderr
    assert tree_hash(world["root"]) == before


def test_an_empty_stdin_history_is_one_line(cli, world):
    result = cli("predict", "--run", world["sine"], "--data", "-", input="")
    assert result.exit_code == 2 and "stdin is empty" in one_error_line(result.stderr)


def test_every_new_option_has_help(cli):
    for command, flags in (("evaluate", ["--data", "--engine", "--errors"]), ("predict", ["--data"])):
        text = " ".join(cli(command, "--help").stdout.split())
        for flag in flags:
            assert flag in text, (command, flag)


@pytest.mark.process
def test_bad_values_and_litert_evaluations_answer_without_tensorflow(world, tmp_path):
    """In a process where importing TensorFlow or Keras fails, every bad case gets its line, and
    evaluate on the textgen and sentiment runs (auto: LiteRT) answers in full."""
    commands = [filled(args, world) for args, _ in CASES]
    commands += [["evaluate", "--run", str(world[task]), "--json", "--errors", "2"] for task in ENGINE_TASKS]
    commands += [["evaluate", "--run", str(world["sentiment"]), "--data", str(write_test_split(
        "sentiment", load_run(world["sentiment"]), tmp_path / "new.tsv"))]]
    answers = answers_without_tensorflow(commands, tmp_path)
    for (args, fragment), answer in zip(CASES, answers):
        assert "was imported" not in answer, (args, answer)
        assert fragment in answer and "exit 2" in answer, (args, answer)
    for answer in answers[len(CASES):]:
        assert "litert engine" in answer and "exit 0" in answer and "was imported" not in answer, answer
