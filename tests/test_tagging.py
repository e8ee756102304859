"""The tagging task: readers, splits, tokenizer, baseline, entity F1, masking, training, predict."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from seqapp.errors import SeqappError
from seqapp.metrics import bio_entities, entity_scores, is_bio
from seqapp.tasks import load_config
from seqapp.tasks.tagging import MostFrequentTag, Tagging, tagger, tagging_scores
from seqapp.tasks.tagging_data import Encoder, Sentences, drop_probabilities, read_sentences, split_tokens

CONLLU = """\
# sent_id = 1
# text = The cats didn't sleep.
1\tThe\tthe\tDET\tDT\t_\t2\tdet\t_\t_
2\tcats\tcat\tNOUN\tNNS\t_\t5\tnsubj\t_\t_
3-4\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_
3\tdid\tdo\tAUX\tVBD\t_\t5\taux\t_\t_
4\tn't\tnot\tPART\tRB\t_\t5\tadvmod\t_\t_
5\tsleep\tsleep\tVERB\tVB\t_\t0\troot\t_\t_
5.1\tsleep\tsleep\tVERB\tVB\t_\t_\t_\t_\t_
6\t.\t.\tPUNCT\t.\t_\t5\tpunct\t_\t_

# sent_id = 2
1\tRun\trun\tVERB\tVB\t_\t0\troot\t_\t_
2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_
"""

# Small, learnable POS data: (token, tag) sentences built from a few patterns.
SUBJECTS = [("Anna", "PROPN"), ("the dog", "DET NOUN"), ("she", "PRON"), ("my brother", "PRON NOUN")]
VERBS = [("saw", "VERB"), ("likes", "VERB"), ("painted", "VERB")]
OBJECTS = [("a red door", "DET ADJ NOUN"), ("the cat", "DET NOUN"), ("her", "PRON")]


def pos_sentences() -> list[list[tuple[str, str]]]:
    sentences = []
    for subject, subject_tags in SUBJECTS:
        for verb, verb_tag in VERBS:
            for obj, obj_tags in OBJECTS:
                words = f"{subject} {verb} {obj} .".split()
                tags = f"{subject_tags} {verb_tag} {obj_tags} PUNCT".split()
                sentences.append(list(zip(words, tags)))
    return sentences


def write_columns(path: Path, sentences: list[list[tuple[str, str]]]) -> Path:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sentences), encoding="utf-8")
    return path


def config(path: Path | str | None = None, *overrides: str):
    values = {"data.path": str(path)} if path is not None else {}
    return load_config("tagging", list(overrides), values)


# -- readers ----------------------------------------------------------------------------
def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    path = tmp_path / "tiny.conllu"
    path.write_text(CONLLU, encoding="utf-8")
    sentences = read_sentences(path, "auto", "upos")
    assert sentences.tokens == [["The", "cats", "did", "n't", "sleep", "."], ["Run", "!"]]
    assert sentences.tags == [["DET", "NOUN", "AUX", "PART", "VERB", "PUNCT"], ["VERB", "PUNCT"]]
    assert sentences.sources == ["tiny.conllu:3", "tiny.conllu:13"]
    assert read_sentences(path, "auto", "xpos").tags[0] == ["DT", "NNS", "VBD", "RB", "VB", "."]
    assert read_sentences(path, "conllu", "2").tags[1] == ["run", "!"]  # any column by index


def test_conllu_is_recognised_by_content_without_the_suffix(tmp_path):
    path = tmp_path / "treebank.txt"
    path.write_text(CONLLU, encoding="utf-8")
    assert read_sentences(path, "auto", "upos").tags[1] == ["VERB", "PUNCT"]


def test_columns_take_the_last_column_or_the_one_named(tmp_path):
    path = tmp_path / "ner.txt"  # CoNLL-2003 style: space separated, a document marker
    path.write_text("-DOCSTART- -X- -X- O\n\nAnna NNP B-NP B-PER\nsmiled VBD B-VP O\n\n"
                    "Paris NNP B-NP B-LOC\n", encoding="utf-8")
    sentences = read_sentences(path, "auto", "upos")
    assert sentences.tokens == [["Anna", "smiled"], ["Paris"]]
    assert sentences.tags == [["B-PER", "O"], ["B-LOC"]]
    assert read_sentences(path, "columns", "1").tags == [["NNP", "VBD"], ["NNP"]]
    tsv = write_columns(tmp_path / "pos.tsv", [[("#", "SYM"), ("1", "NUM")]])
    assert read_sentences(tsv, "auto", "upos").tokens == [["#", "1"]]  # '#' is a token in columns


@pytest.mark.parametrize("text, fmt, tag_column, message", [
    ("1\tThe\tthe\tDET\n", "conllu", "upos", r"bad\.conllu:1 has 4 tab-separated field\(s\) but CoNLL-U needs 10"),
    ("1\tThe\tthe\tDET\tDT\t_\t0\troot\t_\t_\nx\tcat\tcat\tNOUN\tNN\t_\t1\tnsubj\t_\t_\n", "conllu", "upos",
     r"bad\.conllu:2: ID 'x' is not a word number"),
    ("1\tThe\tthe\t_\tDT\t_\t0\troot\t_\t_\n", "conllu", "upos", r"bad\.conllu:1: no tag in the UPOS column"),
    ("The\tDET\ncat\n", "columns", "upos", r"bad\.conllu:2: expected a token and its tag separated by a tab"),
    ("The\tDET\n", "columns", "3", r"bad\.conllu:1 has 2 column\(s\), so data.tag_column=3 does not exist"),
    ("# only a comment\n\n", "conllu", "upos", r"bad\.conllu has no tagged tokens"),
])
def test_malformed_files_name_the_line_and_the_fix(tmp_path, text, fmt, tag_column, message):
    path = tmp_path / "bad.conllu"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SeqappError, match=message):
        read_sentences(path, fmt, tag_column)


def test_bad_tag_column_is_refused_before_reading(tmp_path):
    with pytest.raises(SeqappError, match="data.tag_column='lemma' is not allowed"):
        config(None, "data.tag_column=lemma")


# -- splits -----------------------------------------------------------------------------
def test_held_out_files_replace_their_own_split(tmp_path):
    main = write_columns(tmp_path / "train.tsv", pos_sentences())  # 36 sentences
    test = write_columns(tmp_path / "test.tsv", pos_sentences()[:5])
    val = write_columns(tmp_path / "val.tsv", pos_sentences()[:3])
    splits = Tagging().load_data(config(main, f"data.test_path={test}", f"data.val_path={val}"))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 3, 5)

    only_test = config(main, f"data.test_path={test}", "data.val_fraction=0.25")
    splits = Tagging().load_data(only_test)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (27, 9, 5)
    assert Tagging().load_data(only_test).val.sources == splits.val.sources  # fixed seed
    other = Tagging().load_data(config(main, f"data.test_path={test}", "data.val_fraction=0.25", "data.split_seed=1"))
    assert other.val.sources != splits.val.sources
    assert not set(splits.val.sources) & set(splits.train.sources)


def test_held_out_paths_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(None, "data.test_path=test.conllu")
    assert cfg.data.test_path == str(tmp_path / "test.conllu")


def test_too_few_sentences_to_hold_out(tmp_path):
    path = write_columns(tmp_path / "two.tsv", pos_sentences()[:2])
    with pytest.raises(SeqappError, match="too few to hold out"):
        Tagging().load_data(config(path, "data.val_fraction=0.4", "data.test_fraction=0.4"))


def test_bundled_data_has_hundreds_of_sentences_in_universal_tags():
    splits = Tagging().load_data(config())
    sentences = len(splits.train) + len(splits.val) + len(splits.test)
    tags = {tag for part in (splits.train, splits.val, splits.test) for sentence in part.tags for tag in sentence}
    assert sentences >= 300
    assert tags <= {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
                    "PUNCT", "SCONJ", "SYM", "VERB", "X"}


# -- tokens and features ----------------------------------------------------------------
@pytest.mark.parametrize("text, tokens", [
    ("The cat sat.", ["The", "cat", "sat", "."]),
    ("I didn't see Anna's e-mail!", ["I", "did", "n't", "see", "Anna", "'s", "e", "-", "mail", "!"]),
    ("Dr. Lee paid $3.50 for 1,000 pins in the U.S. at 9:30", ["Dr.", "Lee", "paid", "$", "3.50", "for", "1,000",
                                                                "pins", "in", "the", "U.S.", "at", "9:30"]),
])
def test_split_tokens_follows_treebank_conventions_and_keeps_tokenized_text(text, tokens):
    assert split_tokens(text) == tokens
    assert split_tokens(" ".join(tokens)) == tokens


def test_long_words_keep_their_start_and_end_in_a_fixed_width():
    prep = {"word_vocab": ["<pad>", "<unk>", "<s>", "</s>", "cat"], "lower": True, "max_word_len": 6,
            "char_vocab": ["<pad>", "<unk>", "<s>", "</s>", *"abcdefghijklmnopqrstuvwxyz"]}
    encoder = Encoder(prep)
    chars = encoder.char_ids(["cat", "abcdefghij"])
    assert chars.shape == (2, 6)
    assert encoder.chars.tokens(chars[1], skip_special=False) == ["<s>", "a", "b", "i", "j", "</s>"]
    assert list(encoder.word_ids(["Cat", "dog"])) == [4, 1]


def test_word_dropout_falls_with_word_frequency():
    probabilities = drop_probabilities(["the", "The", "cat", "the", "dog", "dog"], lower=True, word_dropout=0.6)
    assert probabilities.tolist() == pytest.approx([0.2, 0.2, 0.6, 0.2, 0.3, 0.3])


# -- baseline and scores ----------------------------------------------------------------
def test_most_frequent_tag_baseline_by_hand():
    train = Sentences([["I", "saw", "the", "saw"], ["They", "saw", "it"]],
                      [["PRON", "VERB", "DET", "NOUN"], ["PRON", "VERB", "PRON"]], ["a:1", "a:6"])
    tags = ["DET", "NOUN", "PRON", "PROPN", "VERB"]
    baseline = MostFrequentTag(train, tags, lower=True)
    assert [baseline.tag(token) for token in ["saw", "The", "they", "Oslo", "banjo"]] == [
        "VERB", "DET", "PRON", "PROPN", "NOUN"]
    assert MostFrequentTag(train, tags, lower=False).tag("The") == "PROPN"  # "The" unseen when case counts
    assert MostFrequentTag(train, ["DET", "PRON", "VERB"], lower=True).tag("Oslo") == "PRON"  # most frequent tag

    test = Sentences([["I", "saw", "Oslo", "banjo"]], [["PRON", "VERB", "PROPN", "VERB"]], ["b:1"])
    unseen = np.asarray([not baseline.knows(token) for token in test.tokens[0]])
    assert unseen.tolist() == [False, False, True, True]
    scores = tagging_scores(test, [[baseline.tag(token) for token in test.tokens[0]]], tags, unseen)
    assert scores["accuracy"] == 0.75 and scores["unseen_accuracy"] == 0.5 and scores["unseen_share"] == 0.5


def test_bio_entities_and_entity_f1_by_hand():
    assert bio_entities(["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-ORG"]) == {
        ("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5), ("ORG", 5, 6)}
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    guess = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]  # 2 of 3 found, 2 of 3 guesses right
    scores = entity_scores(truth, guess)
    assert scores["precision"] == pytest.approx(2 / 3, abs=1e-4) and scores["recall"] == pytest.approx(2 / 3, abs=1e-4)
    assert scores["true_entities"] == 3 and scores["predicted_entities"] == 3
    assert is_bio(["B-PER", "I-PER", "O"]) and not is_bio(["NOUN", "VERB"]) and not is_bio(["O"])


# -- model ------------------------------------------------------------------------------
@pytest.mark.parametrize("char_filters", [8, 0])
def test_padding_never_changes_a_prediction(char_filters):
    cfg = config(None, "model.units=6", "model.embedding_dim=5", "model.char_dim=3", "model.layers=2",
                 f"model.char_filters={char_filters}")
    splits = Tagging().load_data(cfg)
    prep = Tagging().fit_preprocessing(cfg, splits)
    model = tagger(prep, cfg.model)
    encoder = Encoder(prep)
    short = ["The", "zorb", "sat", "."]
    alone = np.asarray(model(encoder.batch([short]), training=False))
    padded = np.asarray(model(encoder.batch([short, short * 5]), training=False))
    np.testing.assert_allclose(padded[0, :len(short)], alone[0], atol=1e-5)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-epoch run on a small BIO-tagged file (entities: PER, LOC)."""
    from seqapp.training import train

    folder = tmp_path_factory.mktemp("tagging")
    names, places = ["Anna", "Omar", "Lena", "Kenji"], ["Paris", "Lima", "Oslo"]
    sentences = [[(name, "B-PER"), ("flew", "O"), ("to", "O"), (place, "B-LOC"), (".", "O")]
                 for name in names for place in places] * 3
    path = write_columns(folder / "ner.tsv", sentences)
    cfg = config(path, "model.units=8", "model.embedding_dim=8", "model.char_dim=4", "model.char_filters=8",
                 "train.epochs=2")
    return train(cfg, folder / "runs", verbose=0, log=lambda _: None)


def test_training_reports_accuracy_unseen_tokens_baseline_and_entities(trained):
    metrics = trained.metrics
    for split in ("val", "test"):
        assert {"accuracy", "macro_f1", "per_class", "unseen_accuracy", "entities"} <= set(metrics[split])
        assert {"accuracy", "unseen_accuracy", "entities"} <= set(metrics["baseline_most_frequent_tag"][split])
    assert metrics["tags"] == ["B-LOC", "B-PER", "O"]
    assert "most-frequent-tag" in Tagging().headline(metrics)
    assert any("entity F1" in line for line in Tagging().format_metrics(metrics))


def test_predict_prints_token_slash_tag_or_json(trained, caplog):
    task = Tagging()
    with caplog.at_level(logging.WARNING, logger="seqapp"):
        lines = list(task.predict(trained, ["Anna flew to Quito.", ""]))
    assert [token.rsplit("/", 1)[0] for token in lines[0].split()] == ["Anna", "flew", "to", "Quito", "."]
    assert all(token.rsplit("/", 1)[1] in {"B-LOC", "B-PER", "O"} for token in lines[0].split())
    assert lines[1] == ""
    assert "Quito" in caplog.text
    record = json.loads(next(task.predict(trained, ["Anna flew to Quito."], json=True)))
    assert record["tokens"] == ["Anna", "flew", "to", "Quito", "."] and len(record["tags"]) == 5
    with pytest.raises(SeqappError, match="no sentences to tag"):
        list(task.predict(trained, []))


# -- real data --------------------------------------------------------------------------
@pytest.mark.slow
def test_english_treebank_pos_accuracy_at_least_90_percent(shared_data, tmp_path):
    from seqapp.training import train

    folder = shared_data / "tagging"
    cfg = config(folder / "en_ewt-ud-dev.conllu", f"data.test_path={folder / 'en_ewt-ud-test.conllu'}")
    metrics = train(cfg, tmp_path, verbose=0, log=lambda _: None).metrics
    assert metrics["test"]["accuracy"] >= 0.90
    assert metrics["test"]["accuracy"] > metrics["baseline_most_frequent_tag"]["test"]["accuracy"] + 0.03
