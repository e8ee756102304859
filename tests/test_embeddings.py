"""Outside knowledge for the sentiment classifier: model.pretrained_embeddings and model.init_from.

Vector files (GloVe and word2vec text format) and a word-level textgen run are made by the
tests; the classifier's embedding rows must equal the source's vectors after building, stay
equal after training when frozen and move when fine-tuned; the coverage is logged and saved;
bad files and incompatible runs are one ``error:`` line with exit 2 that leaves nothing behind.
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import answers_without_tensorflow, tiny_config

from seqapp import embeddings, runs
from seqapp.errors import SeqappError
from seqapp.tasks import load_run
from seqapp.tasks.warm_start import PREP_KEY, embedding_layer

POSITIVE = ["great phone, love it", "excellent sound and a great price", "i love this camera", "works great",
            "wonderful film, great cast", "the best meal in town", "perfect fit, very happy", "amazing value"]
NEGATIVE = ["terrible phone, hate it", "awful sound and a silly price", "it broke after a day", "does not work",
            "boring film, awful cast", "the worst meal in town", "poor fit, very unhappy", "a waste of money"]
DIM = 8  # the tiny classifier's embedding_dim
# Words of the data the vector files cover: "Love" cased (found through lower-casing), the rest as in the data.
COVERED = ["great", "phone", ",", "Love", "it", "sound", "price", "camera", "film", "cast", "awful", "terrible",
           "hate", "boring", "worst", "waste", "money", "happy", "unhappy", "best"]


@pytest.fixture
def reviews(tmp_path: Path) -> Path:
    lines = [f"{text}\t{label}" for _ in range(3) for pair in zip(POSITIVE, NEGATIVE)
             for text, label in zip(pair, ("1", "0"))]
    path = tmp_path / "reviews.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def word_vectors(words: list[str] = COVERED, dim: int = DIM, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {word: rng.normal(0.0, 0.5, dim).round(5).astype(np.float32) for word in words}


def write_vectors(path: Path, vectors: dict[str, np.ndarray], word2vec: bool = False, extra: int = 3) -> Path:
    """A GloVe file (``word v1 ... vN``), or word2vec text (a ``count dim`` header, a trailing space
    on each line as word2vec's own tool writes); ``extra`` lines of words no data has come first."""
    dim = len(next(iter(vectors.values())))
    rng = np.random.default_rng(1)
    rows = [(f"zzword{i}", rng.normal(size=dim).round(5)) for i in range(extra)] + list(vectors.items())
    lines = [f"{word} {' '.join(f'{value:.5f}' for value in vector)}{' ' if word2vec else ''}" for word, vector in rows]
    if word2vec:
        lines.insert(0, f"{len(rows)} {dim}")
    text = "\n".join(lines) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def train(tmp_path: Path, data: Path, *settings: str, epochs: int = 1, task: str = "sentiment"):
    from seqapp.training import train as train_run

    return train_run(tiny_config(task, *settings, epochs=epochs, data_file=data), tmp_path / "runs", verbose=0,
                     log=lambda _: None)


def rows_of(run_or_model, vocab: list[str], words: list[str]) -> np.ndarray:
    model = getattr(run_or_model, "model", run_or_model)
    matrix = embedding_layer(model).get_weights()[0]
    return matrix[[vocab.index(word) for word in words]]


# -- reading vector files (no TensorFlow) ----------------------------------------------------
@pytest.mark.parametrize("name, word2vec", [("glove.txt", False), ("vectors.vec", True), ("glove.txt.gz", False)])
def test_glove_and_word2vec_text_files_give_the_vectors_of_the_vocabulary(tmp_path, name, word2vec):
    vectors = word_vectors()
    path = write_vectors(tmp_path / name, vectors, word2vec=word2vec)
    vocab = ["<pad>", "<unk>", "<s>", "</s>", "great", "love", "absent", ","]
    assert embeddings.file_dimension(path) == DIM
    dim, matcher = embeddings.read_vectors(path, vocab)
    assert dim == DIM and matcher.words == 4
    assert sorted(matcher.rows) == [4, 5, 7]  # "absent" is in no line
    np.testing.assert_allclose(matcher.rows[4], vectors["great"], atol=1e-6)
    np.testing.assert_allclose(matcher.rows[5], vectors["Love"], atol=1e-6)  # through lower-casing
    np.testing.assert_allclose(matcher.rows[7], vectors[","], atol=1e-6)


def test_an_exact_word_wins_over_a_lower_cased_one_and_a_word_may_hold_spaces(tmp_path):
    path = tmp_path / "cased.txt"
    path.write_text("The 1 1\nthe 2 2\nTHE 3 3\nnew york 4 4\nApple 5 5\n", encoding="utf-8")
    dim, matcher = embeddings.read_vectors(path, ["<pad>", "<unk>", "<s>", "</s>", "the", "The", "new york", "apple"])
    assert dim == 2
    assert {i: row.tolist() for i, row in matcher.rows.items()} == {
        4: [2, 2], 5: [1, 1], 6: [4, 4], 7: [5, 5]}
    assert embeddings.coverage_line("pretrained embeddings", 8412, 9996, "FILE") == \
        "pretrained embeddings: 8,412 of 9,996 words (84.2%) found in FILE"


def test_rows_not_covered_start_among_the_covered_vectors():
    rng = np.random.default_rng(3)
    rows = {i: rng.normal(2.0, 0.5, 16).astype(np.float32) for i in range(4, 404)}
    matrix = embeddings.fill_matrix(rows, 2000, 16, seed=0)
    assert matrix.shape == (2000, 16) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[4:404], np.stack(list(rows.values())))
    assert not matrix[0].any()  # padding
    fresh = matrix[404:]
    assert abs(fresh.mean() - 2.0) < 0.1 and 0.4 < fresh.std() < 0.6  # the covered rows' statistics
    np.testing.assert_array_equal(matrix, embeddings.fill_matrix(rows, 2000, 16, seed=0))  # seeded


# -- pretrained vectors in a training ---------------------------------------------------------
def test_embedding_starts_from_the_vectors_stays_frozen_and_the_run_is_self_contained(tmp_path, reviews, caplog):
    vectors = word_vectors()
    path = write_vectors(tmp_path / "glove.txt", vectors)
    words = [word.lower() for word in COVERED]
    with caplog.at_level(logging.INFO, logger="seqapp"):
        run = train(tmp_path, reviews, f"model.pretrained_embeddings={path}", "model.embedding_dim=null",
                    "model.freeze_embeddings=true", epochs=3)
    vocab = run.preprocessing["tokenizer"]["vocab"]
    expected = np.stack([vectors[word] for word in COVERED])
    np.testing.assert_allclose(rows_of(run, vocab, words), expected, atol=1e-6)  # after 3 epochs: unchanged
    saved = json.loads((run.path / "preprocessing.json").read_text())[PREP_KEY]
    assert saved == {"kind": "vectors", "source": str(path), "dim": DIM, "words": len(vocab) - 4,
                     "found": len(COVERED), "frozen": True}
    lines = [record.getMessage() for record in caplog.records if "pretrained embeddings:" in record.getMessage()]
    share = 100 * len(COVERED) / (len(vocab) - 4)
    assert lines == [f"pretrained embeddings: {len(COVERED)} of {len(vocab) - 4} words ({share:.1f}%) found in {path}"]
    path.unlink()  # predict reads the run only
    again = load_run(run.path)
    np.testing.assert_allclose(rows_of(again, vocab, words), expected, atol=1e-6)
    from seqapp.tasks.sentiment import Sentiment

    assert len(list(Sentiment().predict(again, ["great phone"]))) == 1


def test_fine_tuned_vectors_move_and_word2vec_fills_the_configured_size(tmp_path, reviews):
    vectors = word_vectors()
    path = write_vectors(tmp_path / "vectors.vec", vectors, word2vec=True)
    run = train(tmp_path, reviews, f"model.pretrained_embeddings={path}", "train.learning_rate=0.05", epochs=2)
    vocab = run.preprocessing["tokenizer"]["vocab"]
    moved = rows_of(run, vocab, [word.lower() for word in COVERED]) - np.stack([vectors[word] for word in COVERED])
    assert np.abs(moved).max() > 1e-3  # fine-tuned (the default)
    assert run.preprocessing[PREP_KEY]["frozen"] is False
    assert embedding_layer(run.model).trainable


# -- a textgen run -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def textgen_words(tmp_path_factory):
    """A tiny word-level GRU textgen run (8 units, embedding 8: the tiny classifier's sizes) on the review texts."""
    folder = tmp_path_factory.mktemp("textgen-words")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(POSITIVE + NEGATIVE + ["an unlabelled line about the sea"]) * 4 + "\n",
                      encoding="utf-8")
    return train(folder, corpus, "data.level=word", "data.lower=true", "model.cell=gru", "model.units=8",
                 "model.embedding_dim=8", "data.seq_len=8", "train.litert=false", "train.jit_compile=false",
                 task="textgen")


@pytest.mark.parametrize("bidirectional", [False, True])
def test_init_from_copies_the_embedding_rows_by_token_and_the_recurrent_layer(tmp_path, reviews, textgen_words,
                                                                             bidirectional, caplog):
    from seqapp.training import prepare

    source = load_run(textgen_words.path)
    cfg = tiny_config("sentiment", f"model.init_from={source.path}", "model.embedding_dim=null",
                      f"model.bidirectional={str(bidirectional).lower()}", data_file=reviews)
    with caplog.at_level(logging.INFO, logger="seqapp"):
        ready = prepare(cfg)
    vocab, theirs = ready.preprocessing["tokenizer"]["vocab"], source.preprocessing["tokenizer"]["vocab"]
    shared = [word for word in vocab[4:] if word in theirs]
    assert len(shared) == len(vocab) - 4  # the textgen run read the same texts
    np.testing.assert_array_equal(rows_of(ready.model, vocab, shared), rows_of(source, theirs, shared))
    recurrent = [layer for layer in ready.model.layers if "encoder" in layer.name and layer.weights]
    forward = recurrent[0].forward_layer if bidirectional else recurrent[0]
    lm = next(layer for layer in source.model.layers if layer.name.startswith("lm_gru"))
    for ours, trained in zip(forward.get_weights(), lm.get_weights()):
        np.testing.assert_array_equal(ours, trained)
    if bidirectional:  # the backward direction starts fresh
        assert not np.allclose(recurrent[0].backward_layer.get_weights()[0], lm.get_weights()[0])
    info = ready.preprocessing[PREP_KEY]
    assert (info["kind"], info["found"], info["words"], info["recurrent_layers"]) == \
        ("textgen_run", len(shared), len(vocab) - 4, 1)
    assert any(f"init_from: {len(shared)} of {len(shared)} words (100.0%) found in the textgen run" in r.getMessage()
               for r in caplog.records)


# -- bad input: one line, exit 2, nothing saved --------------------------------------------------
def refused(cli, out: Path, *args: str) -> str:
    """``seqapp train sentiment`` with the tiny settings and ``args``: its one error line."""
    from seqapp.tasks.sentiment import Sentiment

    tiny = [arg for setting in Sentiment.tiny["set"] for arg in ("--set", setting)]
    result = cli("train", "sentiment", "--out", out, "--epochs", "1", "--quiet", *tiny, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    assert "; " in errors[0]
    assert not runs.run_dirs(out) and not list(out.rglob(".*")), "a run or draft was left behind"
    return errors[0]


def bad_files(tmp_path: Path) -> dict[str, Path]:
    good = write_vectors(tmp_path / "good.txt", word_vectors())
    lines = good.read_text().splitlines()
    files = {"good": good, "wide": write_vectors(tmp_path / "wide.txt", word_vectors(dim=12))}
    files["short_line"] = tmp_path / "short.txt"
    files["short_line"].write_text("\n".join(lines[:10] + ["phone 0.1 0.2"] + lines[10:]) + "\n")
    files["not_number"] = tmp_path / "nan.txt"
    files["not_number"].write_text("\n".join(lines + ["silly " + " ".join(["abc"] * DIM)]) + "\n")
    files["latin1"] = tmp_path / "latin1.txt"
    files["latin1"].write_bytes(("\n".join(lines) + "\n").encode() + "caf\xe9 ".encode("latin-1") + b"1 " * DIM + b"\n")
    files["binary"] = tmp_path / "GoogleNews.bin"
    files["binary"].write_bytes(b"3 8\ngreat " + np.ones(DIM, np.float32).tobytes() + b"\n")
    files["foreign"] = write_vectors(tmp_path / "foreign.txt", word_vectors(["haus", "katze", "hund"]))
    files["empty"] = tmp_path / "empty.txt"
    files["empty"].write_text("\n\n")
    return files


@pytest.mark.parametrize("settings, fragment", [
    (["model.pretrained_embeddings={tmp}/missing.txt"], "pretrained embeddings file {tmp}/missing.txt does not exist"),
    (["model.pretrained_embeddings={tmp}"], "is a folder, not a regular file"),
    (["model.pretrained_embeddings={wide}"], "model.embedding_dim=8 but the vectors in {wide} have 12 dimensions; "
                                             "set model.embedding_dim=12 or null"),
    (["model.pretrained_embeddings={short_line}"], "short.txt:11 has 2 value(s) after its word, but the file's "
                                                   "vectors have 8"),
    (["model.pretrained_embeddings={not_number}"], "nan.txt:24 has a value that is not a finite number"),
    (["model.pretrained_embeddings={latin1}"], "latin1.txt is not UTF-8 text (bad byte at line 24)"),
    (["model.pretrained_embeddings={binary}"], "(a word2vec binary file? save it in the text format)"),
    (["model.pretrained_embeddings={foreign}"], "none of the"),
    (["model.pretrained_embeddings={empty}"], "empty.txt has no vectors"),
    (["model.pretrained_embeddings={good}", "data.level=char"], "set data.level=word"),
    (["model.pretrained_embeddings={good}", "model.init_from={tmp}"], "set only one of them"),
    (["model.embedding_dim=null"], "model.embedding_dim=null takes the size of"),
    (["model.freeze_embeddings=true"], "neither model.pretrained_embeddings nor model.init_from is set"),
])
def test_bad_vector_files_and_settings_are_one_line(cli, tmp_path, reviews, settings, fragment):
    files = {name: str(path) for name, path in bad_files(tmp_path).items()}
    fill = {"tmp": str(tmp_path), **files}
    args = [arg for setting in settings for arg in ("--set", setting.format(**fill))]
    before = {path: Path(path).read_bytes() for path in files.values()}
    error = refused(cli, tmp_path / "runs", "--data", reviews, *args)
    assert fragment.format(**fill) in error
    assert before == {path: Path(path).read_bytes() for path in files.values()}


def test_incompatible_runs_are_refused_naming_the_setting(cli, tmp_path, reviews, textgen_words, tree_hash):
    text = textgen_words.path
    chars, senti = tmp_path / "chars", tmp_path / "senti"  # copies of the run, changed where the check reads
    shutil.copytree(text, chars)
    prep = json.loads((chars / "preprocessing.json").read_text())
    (chars / "preprocessing.json").write_text(json.dumps({**prep, "tokenizer": {**prep["tokenizer"], "level": "char"}}))
    shutil.copytree(text, senti)
    (senti / "config.yaml").write_text((senti / "config.yaml").read_text().replace("task: textgen", "task: sentiment"))
    before = {path: tree_hash(path) for path in (text, chars, senti)}
    cases = [
        ([f"model.init_from={chars}"], "is a char-level textgen run but this classifier has data.level=word"),
        ([f"model.init_from={senti}"], "is a sentiment run, not a textgen run"),
        ([f"model.init_from={tmp_path}/nothing"], "model.init_from: run folder"),
        ([f"model.init_from={text}", "model.units=16"], "has model.units=8 but this classifier model.units=16; "
                                                        "set model.units=8"),
        ([f"model.init_from={text}", "model.cell=lstm"], "set model.cell=gru"),
        ([f"model.init_from={text}", "model.layers=2"], "set model.layers=1"),
        ([f"model.init_from={text}", "model.embedding_dim=4"], "set model.embedding_dim=8 or null"),
    ]
    for settings, fragment in cases:
        args = [arg for setting in settings for arg in ("--set", setting)]
        assert fragment in refused(cli, tmp_path / "runs", "--data", reviews, *args)
    assert before == {path: tree_hash(path) for path in (text, chars, senti)}


def test_a_source_read_outside_the_cli_is_checked_alike(tmp_path, reviews):
    """training.train without the CLI's early checks still meets them (when the preprocessing is fitted)."""
    wide = write_vectors(tmp_path / "wide.txt", word_vectors(dim=12))
    with pytest.raises(SeqappError, match="have 12 dimensions; set model.embedding_dim=12 or null"):
        train(tmp_path, reviews, f"model.pretrained_embeddings={wide}")


@pytest.mark.process
def test_cheap_checks_answer_before_tensorflow_is_imported(tmp_path, reviews, textgen_words):
    files = bad_files(tmp_path)
    files["missing"] = tmp_path / "missing.txt"
    cases = [(f"model.pretrained_embeddings={files[name]}", fragment) for name, fragment in (
        ("wide", "have 12 dimensions"), ("missing", "does not exist"), ("binary", "binary"), ("empty", "no vectors"))]
    cases.append((f"model.init_from={textgen_words.path}", "set model.units=8"))
    answers = answers_without_tensorflow([["train", "sentiment", "--data", reviews, "--out", tmp_path / "runs",
                                           "--set", setting] for setting, _ in cases], tmp_path)
    for (setting, fragment), answer in zip(cases, answers, strict=True):
        assert "exit 2" in answer and "was imported" not in answer, (setting, answer)
        assert fragment in answer, (setting, answer)
