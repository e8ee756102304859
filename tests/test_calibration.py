"""Ranking and calibration of class probabilities, and temperature scaling (``train.calibrate``).

The metric functions are checked on small hand-made arrays whose figures are worked out by
hand (and, where scikit-learn is installed, against it on random ones). The task-level
checks use one tiny sentiment training with ``train.calibrate: true`` (the whole flow:
fit, save, LiteRT graph, metrics, plots) and copies of the session's tiny runs with a
temperature written into them (predict on both engines, tagging's probabilities, the
fitting itself). A temperature never changes a label.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import answers_without_tensorflow, copy_run, tiny_config

from seqapp import files, metrics
from seqapp.errors import SeqappError
from seqapp.tasks import load_config, load_run

TEXTS = ["works great, love it", "the battery died after a day", "", "not bad at all", "zxqv blorf !!"]
SENTENCES = ["I saw her duck .", "The cat sat on the mat.", "Dr. Smith didn't see zxqvblorf"]


def error_line(result) -> str:
    """The single stderr line of a command that failed with exit 2."""
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# -- the figures, by hand ---------------------------------------------------------------------


def test_roc_auc_and_average_precision_by_hand():
    scores, positive = np.array([0.1, 0.4, 0.35, 0.8]), np.array([False, False, True, True])
    # thresholds 0.8, 0.4, 0.35, 0.1: (tp, fp) = (1, 0), (1, 1), (2, 1), (2, 2)
    assert metrics.roc_auc(scores, positive) == pytest.approx(0.75)  # 3 of the 4 pairs ranked right
    assert metrics.average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    false_rate, true_rate = metrics.roc_curve(scores, positive)
    np.testing.assert_allclose(false_rate, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(true_rate, [0, 0.5, 0.5, 1, 1])


def test_tied_scores_count_half_and_form_one_threshold():
    scores, positive = np.array([0.5, 0.5, 0.5, 0.9]), np.array([True, False, False, True])
    # 0.9 outranks both negatives (2 pairs), 0.5 ties both (2 half pairs): 3 / 4
    assert metrics.roc_auc(scores, positive) == pytest.approx(0.75)
    # threshold 0.9: recall 0.5 at precision 1; threshold 0.5: recall 1 at precision 2 / 4
    assert metrics.average_precision(scores, positive) == pytest.approx(0.5 * 1 + 0.5 * 0.5)
    same = np.full(6, 0.3)
    assert metrics.roc_auc(same, np.arange(6) < 2) == pytest.approx(0.5)
    assert metrics.average_precision(same, np.arange(6) < 2) == pytest.approx(2 / 6)  # the positives' share


def test_ranking_needs_both_kinds_of_example():
    assert metrics.roc_auc(np.array([0.2, 0.7]), np.array([True, True])) is None
    assert metrics.roc_auc(np.array([0.2, 0.7]), np.array([False, False])) is None
    assert metrics.average_precision(np.array([0.2, 0.7]), np.array([False, False])) is None


def test_two_classes_score_the_second_and_more_are_one_vs_rest_macro():
    binary = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
    assert metrics.ranking_scores(binary, np.array([0, 0, 1, 1])) == {"roc_auc": 0.75, "pr_auc": pytest.approx(0.83333)}
    probabilities = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.3, 0.4, 0.3]])
    truth = np.array([0, 1, 1, 0])  # class 2 never occurs: left out of the macro average
    # class 0 scores 0.7, 0.6, 0.2, 0.3 for truths 0, 1, 1, 0: pairs (0.7 > 0.6, 0.7 > 0.2, 0.3 < 0.6, 0.3 > 0.2)
    # -> 3 / 4; class 1 scores 0.2, 0.3, 0.5, 0.4 for truths 0, 1, 1, 0: (0.3 > 0.2, 0.3 < 0.4, 0.5 > 0.2,
    # 0.5 > 0.4) -> 3 / 4
    assert metrics.scored_classes(probabilities, truth) == [0, 1]
    assert metrics.ranking_scores(probabilities, truth)["roc_auc"] == pytest.approx(0.75)
    # class 0, ranked 0.7 (hit), 0.6, 0.3 (hit), 0.2: 0.5 * 1 + 0.5 * 2 / 3; class 1, ranked 0.5 (hit), 0.4,
    # 0.3 (hit), 0.2: the same
    assert metrics.ranking_scores(probabilities, truth)["pr_auc"] == pytest.approx(0.83333)


def test_ranking_matches_scikit_learn_on_random_cases():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    for _ in range(3):
        truth = rng.integers(0, 2, 300)
        scores = np.round(rng.random(300) + 0.4 * truth, 2)  # rounded: many ties
        assert metrics.roc_auc(scores, truth == 1) == pytest.approx(sklearn_metrics.roc_auc_score(truth, scores))
        assert metrics.average_precision(scores, truth == 1) == pytest.approx(
            sklearn_metrics.average_precision_score(truth, scores))
    probabilities = metrics.scaled_probabilities(rng.normal(size=(400, 4)) + 2 * np.eye(4)[rng.integers(0, 4, 400)])
    truth = rng.integers(0, 4, 400)
    assert metrics.ranking_scores(probabilities, truth)["roc_auc"] == pytest.approx(
        sklearn_metrics.roc_auc_score(truth, probabilities, multi_class="ovr"), abs=1e-5)


def test_expected_calibration_error_by_hand():
    # four predictions made at 0.9 (bin (13/15, 14/15]), three right; two at 0.62 (bin (9/15, 10/15]), both right
    probabilities = np.array([[0.9, 0.1]] * 4 + [[0.38, 0.62]] * 2)
    truth = np.array([0, 0, 0, 1, 1, 1])
    assert metrics.expected_calibration_error(probabilities, truth) == pytest.approx((4 * 0.15 + 2 * 0.38) / 6)
    table = metrics.reliability(probabilities, truth)
    assert len(table["counts"]) == metrics.ECE_BINS == 15 and sum(table["counts"]) == 6
    assert table["counts"][13] == 4 and table["counts"][9] == 2
    assert table["accuracy"][13] == pytest.approx(0.75) and table["confidence"][9] == pytest.approx(0.62)
    assert table["accuracy"][0] is None  # an empty bin
    right = np.array([[0.25, 0.75]] * 4)  # three of four right at 0.75: calibrated
    assert metrics.expected_calibration_error(right, np.array([1, 1, 1, 0])) == pytest.approx(0.0)


def test_brier_score_by_hand():
    binary = np.array([[0.2, 0.8], [0.7, 0.3]])
    assert metrics.brier_score(binary, np.array([1, 0])) == pytest.approx((0.2**2 + 0.3**2) / 2)
    three = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert metrics.brier_score(three, np.array([0, 1])) == pytest.approx(
        ((0.3**2 + 0.2**2 + 0.1**2) + (0.1**2 + 0.9**2 + 0.8**2)) / 2)


def test_probability_scores_and_the_frequency_baseline():
    truth = np.array([0, 0, 0, 1])
    baseline = metrics.frequency_probabilities(np.array([0, 0, 1]), 2, len(truth))  # (2 + 1) / 5, (1 + 1) / 5
    np.testing.assert_allclose(baseline, [[0.6, 0.4]] * 4)
    scores = metrics.probability_scores(baseline, truth)
    assert scores["roc_auc"] == 0.5 and scores["pr_auc"] == 0.25  # ranks nothing: the positives' share
    assert scores["ece"] == pytest.approx(abs(0.75 - 0.6), abs=1e-5)
    assert scores["brier"] == pytest.approx((3 * 0.4**2 + 0.6**2) / 4, abs=1e-5)
    assert scores["nll"] == pytest.approx(-(3 * math.log(0.6) + math.log(0.4)) / 4, abs=1e-5)
    unseen = metrics.frequency_probabilities(np.array([0, 0]), 3, 1)  # a class unseen in training
    assert unseen[0, 2] > 0 and math.isfinite(metrics.probability_scores(unseen, np.array([2]))["nll"])


# -- temperature scaling --------------------------------------------------------------------


def sampled(temperature: float, rows: int = 8000, classes: int = 4, seed: int = 0) -> tuple:
    """Logits and classes drawn from softmax(logits / temperature): ``temperature`` is the best fit."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (rows, classes))
    probabilities = metrics.scaled_probabilities(logits, temperature)
    truth = (probabilities.cumsum(axis=1) < rng.random((rows, 1))).sum(axis=1)
    return logits, truth


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_finds_the_temperature_the_labels_were_drawn_at(true_temperature):
    logits, truth = sampled(true_temperature)
    found = metrics.fit_temperature(logits, truth)
    assert found == pytest.approx(true_temperature, rel=0.08)

    def nll(value: float) -> float:
        return metrics.mean_nll(metrics.log_probabilities(logits, value), truth)

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 120))
    assert nll(found) <= min(nll(value) for value in grid) + 1e-9  # no point of a fine grid does better
    assert metrics.expected_calibration_error(metrics.scaled_probabilities(logits, found), truth) < \
        metrics.expected_calibration_error(metrics.scaled_probabilities(logits), truth) / 2


def test_fit_temperature_on_nothing_or_on_constant_logits_is_one():
    assert metrics.fit_temperature(np.zeros((0, 3)), np.zeros(0, np.int64)) == 1.0
    assert metrics.fit_temperature(np.zeros((5, 3)), np.array([0, 1, 2, 0, 1])) == 1.0
    logits = np.array([[0.0, 2.0], [0.0, -3.0]])  # both right: the sharper, the better, down to the bound
    assert metrics.fit_temperature(logits, np.array([1, 0])) == pytest.approx(metrics.TEMPERATURE_RANGE[0], rel=1e-3)


@pytest.mark.parametrize("temperature", [0.01, 0.3, 1.0, 4.0, 100.0])
def test_a_temperature_never_changes_a_label(temperature):
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 5, (2000, 5))
    logits[:50, 1] = logits[:50, 0] + 1e-6  # close calls too
    scaled = metrics.scaled_probabilities(logits, temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1), logits.argmax(axis=1))
    # a sigmoid head: its logit z as [0, z], the label "positive" exactly when z > 0, at any T > 0
    z = np.r_[rng.normal(0, 4, 2000), [1e-7, -1e-7, 30.0, -30.0]]
    binary = metrics.scaled_probabilities(metrics.as_logits(z[:, None]), temperature)
    np.testing.assert_array_equal(binary.argmax(axis=1), (z > 0).astype(int))
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(binary[:, 1], 1 / (1 + np.exp(-z / temperature)), rtol=1e-9, atol=1e-300)


def test_calibration_change_reports_before_and_after():
    logits, truth = sampled(2.0, rows=3000, seed=4)
    change = metrics.calibration_change(logits, truth, 2.0)
    assert change["nll_after"] < change["nll_before"] and change["ece_after"] < change["ece_before"]
    assert metrics.calibration_change(logits, truth, 1.0)["nll_after"] == change["nll_before"]


# -- the setting ------------------------------------------------------------------------------


def test_a_task_without_class_probabilities_refuses_the_setting(cli):
    for task in ("textgen", "sine", "translate"):
        with pytest.raises(SeqappError, match=f"train.calibrate does not apply to {task} runs"):
            load_config(task, ["train.calibrate=true"])
    line = error_line(cli("train", "sine", "--set", "train.calibrate=true"))
    assert "train.calibrate does not apply to sine runs" in line and "remove the setting" in line
    assert load_config("sentiment", ["train.calibrate=true"]).train.calibrate is True
    assert load_config("tagging").train.calibrate is False  # off by default


def test_calibrating_needs_a_validation_split():
    with pytest.raises(SeqappError, match="set data.val_fraction above 0"):
        load_config("sentiment", ["train.calibrate=true", "data.val_fraction=0"])
    with pytest.raises(SeqappError, match="set data.val_fraction above 0 or give data.val_path"):
        load_config("tagging", ["train.calibrate=true", "data.val_fraction=0"])


@pytest.mark.process
def test_the_refusal_answers_before_tensorflow_starts(tmp_path):
    (answer,) = answers_without_tensorflow([["train", "textgen", "--set", "train.calibrate=true"]], tmp_path)
    assert "train.calibrate does not apply to textgen runs" in answer and answer.strip().endswith("exit 2")


def test_a_resumed_draft_ignores_the_calibration_saved_before_it_stopped(tmp_path):
    from seqapp.training import keep_preprocessing

    prep = {"task": "sentiment", "classes": ["a", "b"]}
    files.write_json(tmp_path / "preprocessing.json", {**prep, "calibration": {"temperature": 1.7}})
    keep_preprocessing(tmp_path, prep)  # no "training data changed": finishing fits it again
    with pytest.raises(SeqappError, match="training data changed"):
        keep_preprocessing(tmp_path, {**prep, "classes": ["a", "c"]})


# -- a calibrated sentiment run, trained -------------------------------------------------------


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """A tiny sentiment run trained with ``train.calibrate: true`` (LiteRT graph included)."""
    from seqapp.training import train

    return train(tiny_config("sentiment", "train.calibrate=true"), tmp_path_factory.mktemp("calibrated"),
                 verbose=0, log=lambda _: None)


def test_training_fits_saves_and_reports_the_temperature(calibrated):
    from seqapp.tasks.sentiment import Sentiment, class_logits, label_ids

    run = load_run(calibrated.path)
    found = run.preprocessing["calibration"]["temperature"]
    splits = Sentiment().load_data(run.config)
    truth = label_ids(splits.val, run.preprocessing["classes"])
    logits = class_logits(run, splits.val.texts)
    assert found == pytest.approx(metrics.fit_temperature(logits, truth), rel=1e-4) and found != 1.0
    saved = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    assert saved["calibration"]["temperature"] == found
    for split in ("val", "test"):
        change = saved["calibration"][split]
        assert set(change) == {"ece_before", "ece_after", "nll_before", "nll_after"}
        assert saved[split]["ece"] == change["ece_after"] and saved[split]["nll"] == change["nll_after"]
    assert saved["calibration"]["val"]["nll_after"] <= saved["calibration"]["val"]["nll_before"]
    for figures in (saved["test"], saved["baseline_majority"]["test"]):
        assert {"roc_auc", "pr_auc", "ece", "brier", "nll"} <= set(figures)
    assert saved["baseline_majority"]["test"]["roc_auc"] == 0.5
    for name in ("roc.png", "pr.png", "calibration.png", "confusion_matrix.png"):
        assert (run.path / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_applies_the_temperature_on_both_engines_and_keeps_the_labels(calibrated, cli):
    from seqapp.tasks.sentiment import class_logits, class_probabilities

    run = load_run(calibrated.path)
    found = run.preprocessing["calibration"]["temperature"]
    logits = class_logits(run, TEXTS)
    expected = metrics.scaled_probabilities(logits, found)
    assert np.abs(expected - metrics.scaled_probabilities(logits)).max() > 1e-3  # the temperature shows
    for engine in ("tf", "litert"):
        np.testing.assert_allclose(class_probabilities(run, TEXTS, engine), expected, atol=1e-5, rtol=0)
        shown = cli("predict", "--run", run.path, "--json", "--engine", engine, *TEXTS)
        assert shown.exit_code == 0, shown.output
        records = [json.loads(line) for line in shown.stdout.splitlines()]
        assert [record["label"] for record in records] == [run.preprocessing["classes"][i]
                                                           for i in logits.argmax(axis=1)]
        np.testing.assert_allclose([record["probability"] for record in records], expected.max(axis=1),
                                   atol=1e-5, rtol=0)


def test_evaluate_shows_the_figures_beside_the_baseline_and_the_temperature(calibrated, cli):
    shown = cli("evaluate", "--run", calibrated.path)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    test_line = next(line for line in lines if line.startswith("test ") and "ROC-AUC" in line)
    baseline = lines[lines.index(test_line) + 1]
    assert "ECE" in test_line and "Brier" in test_line and "NLL" in test_line
    assert baseline.strip().startswith("ROC-AUC 0.5000") and "baseline: class frequencies" in baseline
    assert any(line.startswith("temperature ") for line in lines)
    assert any("ECE" in line and "->" in line for line in lines)
    found = json.loads(cli("evaluate", "--run", calibrated.path, "--json").stdout)["metrics"]["calibration"]
    saved = json.loads((calibrated.path / "metrics.json").read_text(encoding="utf-8"))["calibration"]
    assert found["temperature"] == saved["temperature"]
    assert found["test"] == pytest.approx(saved["test"], abs=1e-4)  # what training measured


# -- temperatures written into copies of the session's tiny runs ---------------------------------


def with_temperature(run, into, value: float):
    """A copy of ``run`` calibrated at ``value`` (what training with train.calibrate writes)."""
    copy = copy_run(run, into)
    prep = json.loads((copy.path / "preprocessing.json").read_text(encoding="utf-8"))
    files.write_json(copy.path / "preprocessing.json", {**prep, "calibration": {"temperature": value}})
    return load_run(copy.path)


def test_the_litert_graph_holds_the_temperature(tiny_runs, tmp_path):
    from seqapp.tasks.sentiment import Sentiment, class_logits, class_probabilities

    run = with_temperature(tiny_runs("sentiment"), tmp_path, 0.2)
    Sentiment().export(run, run.path)  # what training does after fitting the temperature
    expected = metrics.scaled_probabilities(class_logits(run, TEXTS), 0.2)
    np.testing.assert_allclose(class_probabilities(run, TEXTS, "litert"), expected, atol=1e-5, rtol=0)
    plain = load_run(tiny_runs("sentiment").path)
    labels = class_probabilities(plain, TEXTS).argmax(axis=1)
    for engine in ("tf", "litert"):
        np.testing.assert_array_equal(class_probabilities(run, TEXTS, engine).argmax(axis=1), labels)


def test_old_runs_read_as_temperature_one_and_their_logits_give_their_probabilities(tmp_path):
    import shutil
    from pathlib import Path

    from seqapp.tasks.base import temperature
    from seqapp.tasks.sentiment import class_logits, class_probabilities
    from seqapp.tasks.tagging import tag_logits, tag_probabilities
    from seqapp.tasks.tagging_data import split_tokens

    fixture = shutil.copytree(Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0", tmp_path / "old")
    (sentiment,) = (fixture / "sentiment").glob("*-old")
    run = load_run(sentiment)
    assert temperature(run.preprocessing) == 1.0
    np.testing.assert_allclose(metrics.scaled_probabilities(class_logits(run, TEXTS)), class_probabilities(run, TEXTS),
                               atol=1e-6, rtol=0)
    (tagging,) = (fixture / "tagging").glob("*-old")
    run = load_run(tagging)
    token_lists = [split_tokens(text) for text in SENTENCES]
    for logits, probabilities in zip(tag_logits(run, token_lists), tag_probabilities(run, token_lists)):
        np.testing.assert_allclose(metrics.scaled_probabilities(logits), probabilities, atol=1e-6, rtol=0)


def test_tagging_fits_a_temperature_and_predict_gives_calibrated_tag_probabilities(tiny_runs, tmp_path, cli):
    from seqapp.tasks.tagging import Tagging, tag_ids, tag_logits
    from seqapp.tasks.tagging_data import split_tokens

    plain = load_run(tiny_runs("tagging").path)
    splits = Tagging().load_data(plain.config)
    found = Tagging().calibrate(plain, splits)
    truth = tag_ids(splits.val.tags, plain.preprocessing["tags"])
    logits = np.concatenate(tag_logits(plain, splits.val.tokens))
    assert found == {"temperature": metrics.fit_temperature(logits, truth), "examples": len(truth)}
    assert metrics.mean_nll(metrics.log_probabilities(logits, found["temperature"]), truth) <= \
        metrics.mean_nll(metrics.log_probabilities(logits), truth)

    run = with_temperature(plain, tmp_path, 0.25)
    before, after = ([json.loads(line) for line in cli("predict", "--run", which.path, "--json", *SENTENCES).stdout
                      .splitlines()] for which in (plain, run))
    token_lists = [split_tokens(text) for text in SENTENCES]
    for old, new, rows in zip(before, after, tag_logits(plain, token_lists)):
        assert new["tags"] == old["tags"] and len(new["probabilities"]) == len(new["tokens"])
        np.testing.assert_allclose(old["probabilities"], metrics.scaled_probabilities(rows).max(axis=1), atol=2e-6)
        np.testing.assert_allclose(new["probabilities"], metrics.scaled_probabilities(rows, 0.25).max(axis=1),
                                   atol=2e-6)
    assert max(abs(a - b) for old, new in zip(before, after)
               for a, b in zip(old["probabilities"], new["probabilities"])) > 1e-3


def test_tagging_evaluate_reports_token_figures_and_the_temperature(tiny_runs, tmp_path):
    from seqapp.tasks.tagging import Tagging

    run = with_temperature(tiny_runs("tagging"), tmp_path, 0.5)
    task = Tagging()
    splits = task.load_data(run.config)
    plain = task.evaluate(load_run(tiny_runs("tagging").path), splits)
    found = task.evaluate(run, splits)
    assert found["test"]["accuracy"] == plain["test"]["accuracy"]  # the same tags
    assert found["calibration"]["temperature"] == 0.5 and "calibration" not in plain
    assert found["calibration"]["test"]["nll_before"] == plain["test"]["nll"]
    assert found["baseline_tag_frequencies"]["test"]["roc_auc"] == 0.5
    assert {"roc_auc", "pr_auc", "ece", "brier", "nll"} <= set(found["test"])
    task.plots(run, splits, tmp_path)
    assert all((tmp_path / name).is_file() for name in ("roc.png", "pr.png", "calibration.png"))
    assert any("baseline: tag frequencies" in line for line in task.format_metrics(found))
