"""The sentiment task: reading labelled files, splitting, masking, training, evaluate, predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from seqapp import config
from seqapp.errors import SeqappError
from seqapp.metrics import classification_metrics
from seqapp.tasks import latest_run, load_config, load_run
from seqapp.tasks.sentiment import Sentiment, classifier, encode_texts
from seqapp.text import Tokenizer

POSITIVE = ["great phone, love it", "excellent sound and a great price", "i love this camera", "works great",
            "wonderful film, great cast", "the best meal in town", "perfect fit, very happy", "amazing value"]
NEGATIVE = ["terrible phone, hate it", "awful sound and a silly price", "it broke after a day", "does not work",
            "boring film, awful cast", "the worst meal in town", "poor fit, very unhappy", "a waste of money"]


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def labelled(positive: str = "1", negative: str = "0", repeat: int = 3) -> list[str]:
    """Headerless ``text<TAB>label`` lines, both classes balanced."""
    return [f"{text}\t{label}" for _ in range(repeat)
            for pair in zip(POSITIVE, NEGATIVE) for text, label in zip(pair, (positive, negative))]


def load(path: Path | str | None = None, *overrides: str):
    values = {"data.path": str(path)} if path is not None else {}
    cfg = load_config("sentiment", list(overrides), values)
    return cfg, Sentiment().load_data(cfg)


def all_labels(splits) -> list[str]:
    return splits.train.labels + splits.val.labels + splits.test.labels


def prep_for(cfg, splits) -> dict:
    return Sentiment().fit_preprocessing(cfg, splits)


# -- label parsing ----------------------------------------------------------------------
def test_integer_labels_are_ordered_numerically(tmp_path):
    lines = [f"text number {i} here\t{label}" for i, label in enumerate(["10", "2", "1"] * 10)]
    cfg, splits = load(write(tmp_path / "multi.tsv", lines))
    assert prep_for(cfg, splits)["classes"] == ["1", "2", "10"]


def test_named_labels_sorted_and_explicit_order_kept(tmp_path):
    path = write(tmp_path / "named.tsv", labelled("positive", "negative"))
    cfg, splits = load(path)
    assert prep_for(cfg, splits)["classes"] == ["negative", "positive"]
    cfg, splits = load(path, "data.classes=[positive, negative]")
    assert prep_for(cfg, splits)["classes"] == ["positive", "negative"]


def test_label_outside_declared_classes_names_the_line(tmp_path):
    lines = labelled("pos", "neg")
    lines[4] = "an odd one\tneutral"
    with pytest.raises(SeqappError, match=r"bad\.tsv:5: unknown label 'neutral'"):
        load(write(tmp_path / "bad.tsv", lines), "data.classes=[neg, pos]")


def test_csv_with_named_columns_and_quoted_commas(tmp_path):
    rows = ["id,review,stars"] + [f'{i},"{text}, really",{label}' for i, (text, label) in
                                   enumerate(zip(POSITIVE * 3 + NEGATIVE * 3, ["good"] * 24 + ["bad"] * 24))]
    cfg, splits = load(write(tmp_path / "reviews.csv", rows), "data.text_column=review", "data.label_column=stars")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 48
    assert set(all_labels(splits)) == {"good", "bad"}
    assert all(text.endswith(", really") for text in splits.train.texts)


def test_header_row_detected_with_index_columns(tmp_path):
    cfg, splits = load(write(tmp_path / "with_header.tsv", ["sentence\tlabel"] + labelled()))
    assert set(all_labels(splits)) == {"0", "1"}
    assert "sentence" not in splits.train.texts + splits.val.texts + splits.test.texts


def test_folder_reads_every_data_file_and_skips_readme(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    write(folder / "a_labelled.txt", labelled()[:24])
    write(folder / "b_labelled.txt", labelled()[24:])
    write(folder / "readme.txt", ["These files hold labelled sentences.", "Cite the paper."])
    cfg, splits = load(folder)
    assert len(all_labels(splits)) == 48
    sources = splits.train.sources + splits.val.sources + splits.test.sources
    assert {source.split(":")[0] for source in sources} == {"a_labelled.txt", "b_labelled.txt"}


# -- stratified split -------------------------------------------------------------------
def test_split_is_stratified_and_fixed_by_seed(tmp_path):
    lines = [f"sentence {i}\t{'a' if i % 4 else 'b'}" for i in range(400)]  # 300 a, 100 b
    path = write(tmp_path / "imbalanced.tsv", lines)
    _, splits = load(path)
    for part, size in ((splits.test, 40), (splits.val, 40), (splits.train, 320)):
        assert len(part) == size
        assert part.labels.count("b") == size // 4
    _, again = load(path)
    _, other = load(path, "data.split_seed=1")
    assert again.test.texts == splits.test.texts
    assert other.test.texts != splits.test.texts
    assert not set(splits.test.texts) & set(splits.train.texts)


def test_rare_class_keeps_a_training_example(tmp_path):
    lines = labelled() + ["a lone example\tneutral"]
    cfg, splits = load(write(tmp_path / "rare.tsv", lines))
    assert "neutral" in splits.train.labels


def test_class_weights_balance_an_imbalanced_split(tmp_path):
    lines = [f"sentence {i}\t{'a' if i % 4 else 'b'}" for i in range(400)]
    cfg, splits = load(write(tmp_path / "imbalanced.tsv", lines))
    weights = dict(zip(prep_for(cfg, splits)["classes"], prep_for(cfg, splits)["class_weights"]))
    assert weights["b"] == pytest.approx(3 * weights["a"])
    cfg, splits = load(tmp_path / "imbalanced.tsv", "data.balance_classes=false")
    assert prep_for(cfg, splits)["class_weights"] == [1.0, 1.0]


# -- bad files --------------------------------------------------------------------------
@pytest.mark.parametrize("bad_line, message", [
    ("\tpositive", r"bad\.tsv:3: the text is empty"),
    ("no label here\t ", r"bad\.tsv:3: the label is empty"),
    ("a text\twith a tab\t1", r"bad\.tsv:3 has 3 fields but line 1 has 2"),
    ("no tab at all", r"bad\.tsv:3 has 1 fields but line 1 has 2"),
])
def test_malformed_rows_name_the_line(tmp_path, bad_line, message):
    lines = labelled()
    lines.insert(2, bad_line)
    with pytest.raises(SeqappError, match=message):
        load(write(tmp_path / "bad.tsv", lines))


def test_single_class_is_refused(tmp_path):
    with pytest.raises(SeqappError, match="single label"):
        load(write(tmp_path / "one.tsv", [f"{text}\t1" for text in POSITIVE]))


def test_missing_files_columns_and_empty_folders(tmp_path):
    with pytest.raises(SeqappError, match="does not exist"):
        load(tmp_path / "nope.tsv")
    with pytest.raises(SeqappError, match="no column named 'review'"):
        load(write(tmp_path / "plain.csv", ["text,label", "good,1", "bad,0"]), "data.text_column=review")
    with pytest.raises(SeqappError, match="has 2 column"):
        load(write(tmp_path / "two.tsv", labelled()), "data.label_column=4")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SeqappError, match="no files matching"):
        load(tmp_path / "empty")
    (tmp_path / "binary.tsv").write_bytes(b"\x00\x01\x02 not text")
    with pytest.raises(SeqappError, match="binary"):
        load(tmp_path / "binary.tsv")


def test_cli_reports_bad_file_in_one_line(cli, tmp_path):
    lines = labelled()
    lines.insert(6, "\tnegative")
    result = cli("train", "sentiment", "--data", write(tmp_path / "bad.tsv", lines), "--out", tmp_path / "runs")
    assert result.exit_code == 2
    assert "bad.tsv:7: the text is empty" in result.output
    assert "Traceback" not in result.output


def test_bundled_data_is_balanced():
    cfg, splits = load()
    labels = all_labels(splits)
    assert len(labels) >= 300
    assert labels.count("positive") == labels.count("negative")


# -- text and masking -------------------------------------------------------------------
def test_encoding_pads_after_the_text_and_truncates():
    tokenizer = Tokenizer("word", lower=True).fit(["Good phone , good price"])
    x = encode_texts(tokenizer, ["good phone", "good phone , good price", "  "], max_len=4)
    assert x.shape == (3, 4)
    assert x[0, 2:].tolist() == [0, 0]
    assert x[2, 0] == 1 and x[2, 1:].tolist() == [0, 0, 0]  # no token: one <unk>, never fully masked


@pytest.mark.parametrize("cell, bidirectional, layers, pooling", [
    ("gru", True, 1, "last"), ("lstm", False, 2, "last"), ("simplernn", True, 1, "last"),
    ("gru", True, 1, "mean"), ("lstm", True, 2, "max"),
])
def test_padding_does_not_change_the_probability(cell, bidirectional, layers, pooling):
    import keras

    settings = {"cell": cell, "units": 8, "layers": layers, "bidirectional": bidirectional, "embedding_dim": 4,
                "pooling": pooling}
    model_cfg = config.make_section(Sentiment.ModelConfig, settings, "model")
    keras.utils.set_random_seed(0)
    for classes in (2, 3):
        model = classifier(20, classes, model_cfg)
        embedding = model.get_layer("embedding")  # large embeddings, so the tokens move the output clearly
        embedding.set_weights([np.random.default_rng(classes).normal(size=(20, 4)).astype(np.float32)])
        ids = np.array([[5, 6, 7, 8, 9]], np.int32)
        short = np.asarray(model(ids))
        long = np.asarray(model(np.pad(ids, ((0, 0), (0, 40)))))
        np.testing.assert_allclose(short, long, rtol=1e-5, atol=1e-6)
        different = np.asarray(model(np.array([[15, 16, 17, 18, 19]], np.int32)))
        assert np.abs(short - different).max() > 1e-3  # the model does read the tokens


# -- metrics ----------------------------------------------------------------------------
def test_classification_metrics_by_hand():
    truth = np.array([0, 0, 0, 1, 1, 2])
    predicted = np.array([0, 0, 1, 1, 2, 2])
    metrics = classification_metrics(truth, predicted, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6, abs=1e-5)
    assert metrics["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert metrics["per_class"]["a"] == {"precision": 1.0, "recall": pytest.approx(2 / 3, abs=1e-5),
                                         "f1": pytest.approx(0.8), "support": 3}
    assert metrics["per_class"]["b"]["f1"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3, abs=1e-5)


# -- training, evaluate and predict through the CLI -------------------------------------
TINY = ["--set", "model.units=8", "--set", "model.embedding_dim=8", "--set", "model.bidirectional=false",
        "--epochs", "1", "-q"]


@pytest.fixture
def binary_run(tiny_runs) -> Path:
    """The session's tiny run on the bundled data (its tiny settings, one epoch)."""
    return tiny_runs("sentiment").path


def test_evaluate_prints_tables_and_baseline(cli, binary_run):
    result = cli("evaluate", "--run", binary_run)
    assert result.exit_code == 0, result.output
    assert "majority class" in result.output
    assert "confusion matrix" in result.output
    assert (binary_run / "plots" / "confusion_matrix.png").stat().st_size > 0
    metrics = json.loads((binary_run / "metrics.json").read_text())
    assert sum(map(sum, metrics["test"]["confusion_matrix"])) == metrics["examples"]["test"]
    assert metrics["baseline_majority"]["test"]["accuracy"] == pytest.approx(0.5)


def test_predict_from_stdin_and_json(cli, binary_run):
    result = cli("predict", "-", "--run", binary_run, input="works great\n\nthe screen broke\nlove it\n")
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert [line.split()[-1] for line in lines] == ["great", "broke", "it"]
    assert all(line.split()[0] in ("positive", "negative") for line in lines)
    result = cli("predict", "works great", "--json", "--run", binary_run)
    record = json.loads(result.output)
    assert record["text"] == "works great"
    assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["probability"] == max(record["probabilities"].values())


def test_predict_refuses_no_input_and_foreign_options(cli, binary_run):
    result = cli("predict", "--run", binary_run)
    assert result.exit_code == 2 and "no texts to classify" in result.output
    result = cli("predict", "fine", "--horizon", "3", "--run", binary_run)
    assert result.exit_code == 2 and "--horizon" in result.output


def test_ten_thousand_lines_in_one_model_call(binary_run, monkeypatch):
    run = load_run(binary_run)
    calls = []
    original = run.model.predict
    monkeypatch.setattr(run.model, "predict", lambda x, **kw: calls.append(len(x)) or original(x, **kw))
    texts = [f"line {i} works great" if i % 2 else f"line {i} broke at once" for i in range(10_000)]
    lines = list(Sentiment().predict(run, texts))
    assert calls == [10_000]
    assert len(lines) == 10_000 and lines[1].endswith("line 1 works great")


def test_a_text_longer_than_max_len_is_read_cut_with_a_warning(cli, tiny_runs):
    """The classifier reads the first max_len tokens, as in training: no longer in silence."""
    run = tiny_runs("sentiment")
    max_len = run.preprocessing["max_len"]
    short, long = " ".join(["great"] * max_len), " ".join(["great"] * (50 * max_len))
    result = cli("predict", "--run", run.path, "--json", long, short)
    assert result.exit_code == 0, result.output
    cut, whole = [json.loads(line) for line in result.stdout.splitlines()]
    assert cut["probabilities"] == whole["probabilities"]
    assert cut["warning"] == f"only the first {max_len} of its {50 * max_len} tokens are read (the run's max_len)"
    assert "warning" not in whole
    assert (f"warning: 1 of 2 inputs have more than the run's max_len of {max_len} tokens (the longest "
            f"{50 * max_len}): only the first {max_len} of each are read" in result.stderr)
    quiet = cli("predict", "--run", run.path, short)
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr, quiet.output


def test_evaluate_refuses_a_label_the_run_never_saw(cli, tmp_path):
    path = write(tmp_path / "data.tsv", labelled("pos", "neg"))
    out = tmp_path / "runs"
    assert cli("train", "sentiment", "--data", path, "--out", out, *TINY, "--set", "train.litert=false").exit_code == 0
    write(path, labelled("pos", "neg") + ["so so\tmeh", "fine i guess\tmeh"])
    result = cli("evaluate", "--out", out)
    assert result.exit_code == 2
    assert "data.tsv:" in result.output and "unknown label 'meh'" in result.output


def test_multi_class_run(cli, tmp_path):
    topics = {"sport": ["the team won the match", "a late goal in the final", "the runner broke the record"],
              "food": ["the soup was hot and salty", "fresh bread from the oven", "a spicy curry with rice"],
              "weather": ["rain all day and strong wind", "a sunny morning, then clouds", "snow fell overnight"]}
    lines = [f"{text}\t{topic}" for _ in range(8) for topic, texts in topics.items() for text in texts]
    out = tmp_path / "runs"
    result = cli("train", "sentiment", "--data", write(tmp_path / "topics.tsv", lines), "--out", out, *TINY)
    assert result.exit_code == 0, result.output
    run = latest_run(out, "sentiment")
    assert run.preprocessing["classes"] == ["food", "sport", "weather"]
    assert run.model.output_shape == (None, 3)
    metrics = run.metrics
    assert np.asarray(metrics["test"]["confusion_matrix"]).shape == (3, 3)
    assert set(metrics["test"]["per_class"]) == {"food", "sport", "weather"}
    result = cli("predict", "--json", "--out", out, "a goal in the match", "hot soup")
    records = [json.loads(line) for line in result.output.strip().splitlines()]
    assert [set(r["probabilities"]) for r in records] == [{"food", "sport", "weather"}] * 2
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5) for r in records)


# -- real data (slow) -------------------------------------------------------------------
@pytest.mark.slow
def test_real_reviews_beat_the_majority_baseline(cli, shared_data, tmp_path):
    out = tmp_path / "runs"
    result = cli("train", "sentiment", "--set", f"data.path={shared_data / 'sentiment'}", "--out", out, "-q")
    assert result.exit_code == 0, result.output
    metrics = latest_run(out, "sentiment").metrics
    assert metrics["examples"] == {"train": 1600, "val": 200, "test": 200}
    assert metrics["baseline_majority"]["test"]["accuracy"] == pytest.approx(0.5)
    assert metrics["test"]["accuracy"] >= 0.74
    assert metrics["test"]["macro_f1"] >= 0.74
