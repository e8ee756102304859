"""Subword vocabularies (``data.level: subword``, SentencePiece) for textgen, sentiment and translate.

The tokenizer: exact round trips on tricky text, the same model bytes from the same data,
a saved tokenizer that encodes as the fitted one, streaming pieces that add up to the
decoded text. The tasks: each trains a tiny subword run that predicts the same on the
LiteRT engine as on TensorFlow, and after a reload; textgen streams exactly the decoded
text; export refuses a SavedModel in one line and ships the SentencePiece model with a
LiteRT graph; old char / word runs still load; bad settings are one error line, exit 2.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_config

from seqapp.errors import SeqappError
from seqapp.tasks import REGISTRY, load_run
from seqapp.text import OOV_ID, SPECIALS, Tokenizer

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "runs-0.1.0"
TRAINING_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Pack my box with five dozen liquor jugs!",
    "How vexingly quick daft zebras jump; sphinx of black quartz, judge my vow.",
    "Don't panic: it's only 42 (forty-two), isn't it?",
    "Café, naïve, façade — « les guillemets » et l'été.",
] * 8
TRICKY = [
    "The lazy fox",
    "  two  leading spaces, two  inside and two trailing  ",
    " one leading, one trailing ",
    "Punctuation!?;: (brackets) [and] {braces} \"quotes\" 'single'",
    "Unseen characters: ☃ 😀 中文 Ωmega ß",
    "line one\nline two\n\nafter a blank line",
    "a\ttab",
    "",
    "é and e\u0301 (composed and decomposed)",
]
# Tiny subword settings per task: the task's tiny run with a vocabulary its bundled data can fill.
SUBWORD = {
    "sentiment": ["data.level=subword", "data.vocab_size=600"],
    "textgen": ["data.level=subword", "data.vocab_size=500"],
    "translate": ["data.level=subword", "data.vocab_size=320"],
}


def fitted(model: str = "unigram", lower: bool = False, size: int = 330) -> Tokenizer:
    return Tokenizer("subword", lower=lower, subword_model=model).fit(TRAINING_TEXT, max_size=size)


# -- the tokenizer ----------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["unigram", "bpe"])
@pytest.mark.parametrize("lower", [False, True])
def test_decode_gives_the_standardized_text_back_exactly(model, lower):
    tokenizer = fitted(model, lower)
    assert tokenizer.vocab[:4] == list(SPECIALS) and len(tokenizer.vocab) == 330
    for text in TRICKY:
        ids = tokenizer.encode(text)
        assert OOV_ID not in ids  # unseen characters are spelled in bytes, never <unk>
        assert tokenizer.decode(ids) == tokenizer.standardize(text)
        assert tokenizer.join(tokenizer.split(text)) == tokenizer.standardize(text)
        assert list(tokenizer.encode_array(text)) == ids
    assert tokenizer.encode("fox", add_start=True, add_end=True)[::len(tokenizer.encode("fox")) + 1] == [2, 3]


def test_training_is_deterministic_and_depends_on_the_data():
    first, second = fitted(), fitted()
    assert first.model_proto == second.model_proto and first.vocab == second.vocab
    other = Tokenizer("subword").fit(TRAINING_TEXT[1:], max_size=330)
    assert other.model_proto != first.model_proto
    assert fitted("bpe").model_proto != first.model_proto
    # the same bytes in a fresh process (no state carried between trainings)
    script = ("import hashlib, sys; sys.path.insert(0, sys.argv[1]); from test_subword import fitted; "
              "print(hashlib.sha256(fitted().model_proto).hexdigest())")
    done = subprocess.run([sys.executable, "-c", script, str(Path(__file__).parent)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    import hashlib

    assert done.stdout.split()[-1] == hashlib.sha256(first.model_proto).hexdigest(), done.stderr


def test_a_saved_tokenizer_encodes_and_decodes_as_the_fitted_one():
    tokenizer = fitted(lower=True)
    saved = json.loads(json.dumps(tokenizer.to_dict()))
    assert saved["level"] == "subword" and saved["subword_model"] == "unigram" and saved["vocab"] == tokenizer.vocab
    loaded = Tokenizer.from_dict(saved)
    for text in TRICKY:
        assert loaded.encode(text) == tokenizer.encode(text) and loaded.split(text) == tokenizer.split(text)
    damaged = {**saved, "sentencepiece": base64.b64encode(b"not a model").decode()}
    with pytest.raises(SeqappError, match="SentencePiece model .* is damaged"):
        Tokenizer.from_dict(damaged).encode("fox")


def test_streamed_pieces_add_up_to_the_decoded_text():
    tokenizer = fitted()  # (byte pieces are never generated, see never_generated: no unseen characters here)
    for text in ["The quick brown fox.", "fox  jumps ", "Café —\nnext line", " lead"]:
        tokens = tokenizer.split(text)
        streamed = tokenizer.piece(None, tokens[0]) + "".join(
            tokenizer.piece(previous, token) for previous, token in zip(tokens, tokens[1:]))
        assert streamed == text
        assert not any("\u2581" in tokenizer.piece(None, token) for token in tokens)


def test_unknown_characters_and_the_ids_never_generated():
    tokenizer = fitted()
    assert tokenizer.unknown_tokens("the fox") == []
    assert tokenizer.unknown_tokens("the ☃ fox ☃ 😀") == ["☃", "😀"]
    banned = tokenizer.never_generated()
    assert banned[:4] == [0, 1, 2, 3] and len(banned) == 4 + 256
    assert all(tokenizer.vocab[i].startswith("<0x") for i in banned[4:])
    assert Tokenizer("word").fit(["a b"]).never_generated() == [0, 1, 2, 3]


@pytest.mark.parametrize("model", ["unigram", "bpe"])
def test_vocab_size_is_the_most_pieces_kept_and_fewer_are_one_info_line(model, caplog):
    caplog.set_level(logging.INFO, logger="seqapp")
    largest = fitted(model, size=50000)
    made = len(largest.vocab)
    assert 330 < made < 50000 and largest.vocab[:4] == list(SPECIALS)
    assert [record.getMessage() for record in caplog.records] == [
        f"subword vocabulary: {made:,} pieces (data.vocab_size 50000 is more than this text can make)"]
    assert fitted(model, size=50000).model_proto == largest.model_proto  # deterministic
    assert fitted(model, size=made + 1).vocab == largest.vocab
    for text in TRICKY:
        assert largest.decode(largest.encode(text)) == text
    caplog.clear()
    assert fitted(model, size=made).vocab == largest.vocab and not caplog.records  # a size it can fill: no line
    with pytest.raises(SeqappError, match=r"data.vocab_size=270 is too small .* at least \d+"):
        fitted(model, size=270)  # below what the characters need: still an error


# -- the tasks --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def subword_runs(tmp_path_factory):
    """One tiny subword run per task, trained the first time a test asks for it."""
    from seqapp.training import train

    trained: dict = {}

    def get(name: str):
        if name not in trained:
            cfg = tiny_config(name, *SUBWORD[name])
            trained[name] = train(cfg, tmp_path_factory.mktemp(f"subword-{name}"), verbose=0, log=lambda _: None)
        return trained[name]

    return get


@pytest.mark.parametrize("name", sorted(SUBWORD))
def test_task_trains_at_subword_level_and_predicts_the_same_on_both_engines(name, subword_runs):
    run = subword_runs(name)
    task = REGISTRY[name]()
    tokenizers = {key: value for key, value in run.preprocessing.items() if key.endswith("tokenizer")}
    assert tokenizers and all(value["level"] == "subword" and value["sentencepiece"] for value in tokenizers.values())
    inputs = [*REGISTRY[name].tiny["inputs"], "unseen ☃ characters"]
    options = REGISTRY[name].tiny["options"]
    if name == "textgen":
        options = {**options, "length": 40, "temperature": 0}  # engines draw differently; greedy is the same
    expected = list(task.predict(run, inputs, **options))
    assert list(task.predict(run, inputs, **options, engine="litert")) == expected
    assert list(task.predict(load_run(run.path), inputs, **options)) == expected
    assert all(expected) and not any("\u2581" in line for line in expected)


def test_textgen_streams_exactly_the_decoded_text(subword_runs):
    from seqapp.tasks.textgen import generate_texts, generate_tokens

    run = subword_runs("textgen")
    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    seed = "hello there  "  # ends in spaces: the next piece's space mark must not double them
    for engine in ("tf", "litert"):
        options = {"length": 60, "temperature": 1.5, "random_seed": 3, "num_samples": 2, "engine": engine}
        steps = list(generate_tokens(run, seed, **options))
        texts = generate_texts(run, seed, **options)
        for sample, text in enumerate(texts):
            ids = tokenizer.encode(seed) + [tokenizer.index[step[sample]] for step in steps]
            assert text == tokenizer.decode(ids)
            assert not set(ids[len(tokenizer.encode(seed)):]) & set(tokenizer.never_generated())


def test_translate_evaluates_bleu_on_detokenized_text(subword_runs):
    from seqapp.tasks.translate import make_translator

    run = subword_runs("translate")
    metrics = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    assert "bleu" in metrics["greedy"] and metrics["split"] in ("test", "val", "train")
    translator = make_translator(run, "litert")
    hypothesis = translator.decode_ids(["I am cold."], beam=2)[0]
    assert translator.text(hypothesis) == translator.target_tokenizer.decode(hypothesis.ids)
    assert run.preprocessing["max_len"] >= run.config.data.max_len  # subwords: the longest training sentence


def test_translate_never_produces_a_byte_piece(subword_runs):
    from seqapp.tasks.translate import make_translator

    translator = make_translator(subword_runs("translate"), "litert")
    byte_ids = [i for i in translator.target_tokenizer.never_generated() if i >= 4]
    assert byte_ids
    step = translator.step

    def favour_a_byte(tokens, context, states):  # a byte piece is the most likely token at every step
        log_probs, states, attention = step(tokens, context, states)
        log_probs = np.array(log_probs, np.float64)
        log_probs[:, byte_ids[0]] = 0.0
        return log_probs, states, attention

    translator.step = favour_a_byte
    for beam in (1, 3):
        for hypothesis in translator.decode_ids(["I am cold.", "hello"], beam=beam):
            assert not set(hypothesis.ids) & set(byte_ids)


def test_export_refuses_a_saved_model_and_ships_the_model_with_litert(subword_runs, cli, tmp_path):
    from seqapp import litert
    from seqapp.tasks.sentiment import class_probabilities

    for name, fix in (("sentiment", "use --format litert"), ("translate", "use seqapp predict or seqapp serve")):
        result = cli("export", "--run", subword_runs(name).path, "--to", tmp_path / "exports")
        assert result.exit_code == 2 and result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: a {name} run cannot be exported as saved_model: its subword") and fix in line
    assert not (tmp_path / "exports").exists()
    run = subword_runs("sentiment")
    result = cli("export", "--run", run.path, "--to", tmp_path / "lite", "--format", "litert")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "lite" / "sentiment"
    assert "base64.b64decode(vocabulary['sentencepiece'])" in (folder / "README.md").read_text(encoding="utf-8")
    vocabulary = json.loads((folder / "1" / "vocabulary.json").read_text(encoding="utf-8"))
    import sentencepiece  # the README's step, as a user without seqapp takes it

    processor = sentencepiece.SentencePieceProcessor(model_proto=base64.b64decode(vocabulary["sentencepiece"]))
    signature = json.loads((folder / "1" / "signature.json").read_text(encoding="utf-8"))
    graph = litert.Graph(folder / "1" / "model.tflite", [tensor["name"] for tensor in signature["outputs"]])
    texts = ["Works great, love it", "unseen ☃"]
    for text, expected in zip(texts, class_probabilities(run, texts)):
        ids = processor.encode(text.lower())[:vocabulary["max_len"]] or [OOV_ID]
        got = graph({"tokens": np.asarray([ids], np.int32)})[0][0]
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_litert_predict_imports_sentencepiece_without_tensorflow(subword_runs, tmp_path):
    """The LiteRT engine's tokenizer is SentencePiece: it must not pull TensorFlow in."""
    run = subword_runs("sentiment")
    poison = tmp_path / "poison"
    for module in ("tensorflow", "keras"):
        (poison / module).mkdir(parents=True)
        (poison / module / "__init__.py").write_text(f"raise ImportError('{module} was imported')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(poison), os.environ.get("PYTHONPATH", "")])}
    args = [sys.executable, "-m", "seqapp", "predict", "--run", str(run.path), "--engine", "litert", "--json",
            "works great ☃"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["label"] in run.preprocessing["classes"]


def test_old_char_and_word_runs_still_load():
    for path in sorted(FIXTURE.glob("*/*-old")):
        run = load_run(path)
        for key, value in run.preprocessing.items():
            if key.endswith("tokenizer"):
                tokenizer = Tokenizer.from_dict(value)
                assert tokenizer.level in ("char", "word") and tokenizer.model_proto is None
                token = tokenizer.vocab[len(SPECIALS)]
                assert tokenizer.encode(token) == [len(SPECIALS)] and tokenizer.decode([len(SPECIALS)]) == token


@pytest.mark.parametrize(("task", "sides"), [("sentiment", [""]), ("translate", ["source ", "target "])])
def test_the_default_vocab_size_on_small_data_trains_with_fewer_pieces(cli, tmp_path, task, sides):
    """data.vocab_size (default 4000) is the most pieces kept: the bundled data makes fewer, one line each."""
    sets = [arg for setting in [*REGISTRY[task].tiny["set"], "data.level=subword", "train.litert=false"]
            for arg in ("--set", setting)]
    result = cli("train", task, "--epochs", "1", "--out", tmp_path, *sets)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "subword vocabulary" in line]
    pattern = r"(\w* ?)subword vocabulary: ([\d,]+) pieces \(data.vocab_size 4000 is more than this text can make\)"
    made = [re.fullmatch(pattern, line) for line in lines]
    assert all(made) and [match.group(1) for match in made] == sides, lines
    (path,) = [folder for folder in tmp_path.glob(f"{task}/2*") if folder.is_dir()]
    sizes = [len(value["vocab"]) for key, value in sorted(load_run(path).preprocessing.items())
             if key.endswith("tokenizer")]
    assert sizes == [int(match.group(2).replace(",", "")) for match in made] and max(sizes) < 4000


# -- bad input: one line, exit 2 ----------------------------------------------------------------
@pytest.mark.parametrize(("task", "settings", "message"), [
    ("sentiment", ["data.level=subwords"], "data.level"),
    ("textgen", ["data.level=subword", "data.vocab_size=10"], "data.vocab_size"),
    ("translate", ["data.level=subword", "data.vocab_size=2000000"], "data.vocab_size"),
    ("sentiment", ["data.level=subword", "data.subword_model=wordpiece"], "data.subword_model"),
    ("textgen", ["data.level=subword", "data.vocab_size=300"], "too small"),
])
def test_bad_subword_settings_are_one_error_line(cli, tmp_path, task, settings, message):
    sets = [arg for setting in [*REGISTRY[task].tiny["set"], *settings] for arg in ("--set", setting)]
    result = cli("train", task, "--epochs", "1", "--out", tmp_path, *sets)
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: ") and message in line and ";" in line
    assert not list(tmp_path.glob(f"{task}/2*"))  # no run was saved
